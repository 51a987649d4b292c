//! One connection to etcd at a time: grant this host's lease, put its host
//! key, read the whole prefix (a resync), write this host's keys, then
//! watch from the next revision while keeping the lease alive and writing
//! this host's changes. A compaction, a cancelled watch or a lost lease
//! ends the session with a resync at once; etcd unreachable ends it with
//! a retry after a back-off (logged once until etcd answers again).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchResponse,
};
use futures_util::FutureExt;
use kdns_api::cluster::HostValue;
use tokio::sync::watch;

use super::model::{desired, diff, Desired, Entries, Export, Keys, Lease};
use super::{save_snapshot, ClusterSettings, Link};
use crate::records::Store;

/// First wait before a reconnect; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most operations in one transaction (etcd's default `--max-txn-ops` is 128).
const TXN_OPS: usize = 128;
/// HTTP/2 keep-alive ping interval (etcd refuses more than one per 5 s).
const KEEPALIVE_PING: Duration = Duration::from_secs(10);
/// Keys per page of the resync's read.
const READ_PAGE: i64 = 2000;
/// The snapshot file is written at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// Stop asked.
    Stopped,
    /// Read everything again now (compaction, cancelled watch, lost lease).
    Resync(String),
    /// etcd unreachable or failing: retry after a back-off.
    Down(String),
}

fn down(what: &str) -> impl Fn(etcd_client::Error) -> End + '_ {
    move |e| End::Down(format!("{what}: {e}"))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn connect(cfg: &ClusterSettings, endpoint: &str) -> Result<Client, End> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(cfg.timeout)
        .with_timeout(cfg.timeout)
        // HTTP/2 pings find a dead connection; etcd's servers send GOAWAY
        // (too many pings) to a client that pings more often than every
        // 5 s without data (--grpc-keepalive-min-time).
        .with_keep_alive(KEEPALIVE_PING, cfg.timeout)
        .with_require_leader(true);
    if let Some((user, pw)) = &cfg.auth {
        o = o.with_user(user.clone(), pw.expose().to_string());
    }
    if let Some(t) = &cfg.tls {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &t.ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &t.identity {
            tls = tls.identity(Identity::from_pem(cert, key.expose()));
        }
        o = o.with_tls(tls);
    }
    Client::connect([endpoint], Some(o)).await.map_err(down("connect"))
}

/// Runs sessions until `stop`; `entries` holds the snapshot file's values.
pub async fn run(cfg: ClusterSettings, store: Arc<Store>, link: Arc<Link>, mut entries: Entries, mut stop: watch::Receiver<bool>) {
    let keys = Keys::new(&cfg.prefix);
    let mut backoff = MIN_BACKOFF;
    let mut down_since: Option<Instant> = None;
    let mut revision = link.status().revision;
    // One member at a time, the next one after a failure; hosts start on
    // different members.
    let n = cfg.endpoints.len().max(1);
    let mut next = cfg.host.bytes().map(usize::from).sum::<usize>() % n;
    let mut failures = 0usize;
    loop {
        let endpoint = cfg.endpoints[next % n].clone();
        let mut s = Session {
            endpoint: &endpoint,
            joined: false,
            cfg: &cfg,
            keys: &keys,
            store: &store,
            link: &link,
            entries: &mut entries,
            revision,
            dirty: false,
            down_since,
            stop: stop.clone(),
        };
        // A stop ends a session's read or connect at once, and gives a
        // connected session the time to revoke its lease.
        let grace = async {
            let _ = stop.changed().await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
        };
        let end = tokio::select! {
            end = s.serve() => end,
            _ = grace => End::Stopped,
        };
        revision = s.revision;
        down_since = s.down_since;
        if s.joined {
            failures = 0;
            backoff = MIN_BACKOFF;
        }
        if s.dirty {
            s.persist();
        }
        link.set_connected(false);
        match end {
            End::Stopped => break,
            End::Resync(why) => {
                tracing::info!("cluster: {why}: reading every key again");
                backoff = MIN_BACKOFF;
            }
            End::Down(e) => {
                let e = format!("{endpoint}: {e}");
                link.update(|st| st.last_error = Some(e.clone()));
                failures += 1;
                next += 1;
                if failures < n {
                    // Another member may answer: no back-off, no warning yet.
                    tracing::info!("cluster: etcd member failed ({e}); trying {}", cfg.endpoints[next % n]);
                    continue;
                }
                if down_since.is_none() {
                    tracing::warn!(
                        "cluster: etcd unreachable (no member answers; last: {e}); serving the last known records and this host's, refusing API changes, retrying"
                    );
                    down_since = Some(Instant::now());
                } else {
                    tracing::debug!("cluster: etcd still unreachable: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        if *stop.borrow() {
            break;
        }
    }
}

struct Session<'a> {
    /// The member this session talks to.
    endpoint: &'a str,
    /// It got as far as the watch.
    joined: bool,
    cfg: &'a ClusterSettings,
    keys: &'a Keys,
    store: &'a Store,
    link: &'a Link,
    entries: &'a mut Entries,
    revision: i64,
    /// Changed since the snapshot file was written.
    dirty: bool,
    /// Since when etcd has been unreachable (logged once).
    down_since: Option<Instant>,
    stop: watch::Receiver<bool>,
}

impl Session<'_> {
    fn persist(&mut self) {
        if let Some(path) = &self.cfg.snapshot_file {
            match save_snapshot(path, &self.cfg.prefix, self.revision, self.entries) {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::warn!("cluster: cannot write the snapshot {}: {e}", path.display()),
            }
        }
    }

    /// Hands the other hosts' records to the store and updates the status.
    fn publish(&mut self) {
        let me = &self.cfg.host;
        if let Err(e) = self.store.set_cluster(self.entries.layer(me)) {
            tracing::error!("cluster: the records of other hosts are not served (the last good ones stay): {e}");
        }
        let hosts = self.entries.hosts(me, unix_ms());
        let (rev, skipped) = (self.revision, self.entries.skipped);
        self.link.update(|s| {
            s.revision = rev;
            s.skipped = skipped;
            s.hosts = hosts;
            s.hosts_at = Some(Instant::now());
        });
        self.dirty = true;
    }

    /// Puts `puts` (under `lease` when given) and deletes `deletes`, in
    /// transactions of at most [`TXN_OPS`] operations.
    async fn write(&self, client: &mut Client, lease: Option<i64>, puts: Vec<(String, String)>, deletes: Vec<String>) -> Result<(), End> {
        let (np, nd) = (puts.len() as u64, deletes.len() as u64);
        let ops: Vec<TxnOp> = deletes
            .into_iter()
            .map(|k| TxnOp::delete(k, None))
            .chain(puts.into_iter().map(|(k, v)| TxnOp::put(k, v, lease.map(|id| PutOptions::new().with_lease(id)))))
            .collect();
        for chunk in ops.chunks(TXN_OPS) {
            client.txn(Txn::new().and_then(chunk.to_vec())).await.map_err(down("write"))?;
        }
        self.link.update(|s| {
            s.puts += np;
            s.deletes += nd;
        });
        Ok(())
    }

    /// The resync: every key under the prefix, at one revision, in pages
    /// of at most [`READ_PAGE`] keys (fewer when values are large: a gRPC
    /// message must stay below the client's 4 MiB limit).
    async fn read_all(&mut self, client: &mut Client) -> Result<(), End> {
        let all = self.keys.all();
        let mut end = all.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut from = all.into_bytes();
        let mut rev = 0;
        let mut page = READ_PAGE;
        self.entries.clear();
        loop {
            let mut o = GetOptions::new().with_range(end.clone()).with_limit(page);
            if rev > 0 {
                o = o.with_revision(rev);
            }
            let resp = match client.get(from.clone(), Some(o)).await {
                Ok(r) => r,
                // Large values: a page over the client's 4 MiB message
                // limit is asked again in halves (one value always fits:
                // etcd takes at most 1.5 MiB per request).
                Err(e) if page > 1 && e.to_string().contains("message length too large") => {
                    page = (page / 2).max(1);
                    continue;
                }
                Err(e) => return Err(End::Down(format!("read: {e}"))),
            };
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                match std::str::from_utf8(kv.key()) {
                    Ok(k) => self.entries.put(self.keys, k, kv.value()),
                    Err(_) => self.entries.skipped += 1,
                }
            }
            match resp.kvs().last() {
                Some(kv) if resp.more() => {
                    from = kv.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        self.revision = rev;
        Ok(())
    }

    /// One watch response applied to the entries; whether it changed any.
    fn apply(&mut self, m: Result<Option<WatchResponse>, etcd_client::Error>) -> Result<bool, End> {
        let r = match m {
            Ok(Some(r)) => r,
            Ok(None) => return Err(End::Down("the watch stream ended".into())),
            Err(e) => return Err(End::Down(format!("watch: {e}"))),
        };
        if r.canceled() {
            if r.compact_revision() > 0 {
                return Err(End::Resync(format!("the watch fell behind a compaction (revision {})", r.compact_revision())));
            }
            return Err(End::Resync(format!("the watch was cancelled ({})", r.cancel_reason())));
        }
        if r.events().is_empty() {
            return Ok(false);
        }
        for ev in r.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(k) = std::str::from_utf8(kv.key()) else {
                self.entries.skipped += 1;
                continue;
            };
            match ev.event_type() {
                EventType::Put => self.entries.put(self.keys, k, kv.value()),
                EventType::Delete => self.entries.delete(k),
            }
        }
        self.revision = r.header().map_or(self.revision, |h| h.revision());
        Ok(true)
    }

    /// Writes what changed between `pushed` and `want`.
    async fn push(&self, client: &mut Client, lease: &Lease, pushed: &Desired, want: &Desired) -> Result<(), End> {
        let (pl, dl) = diff(&pushed.leased, &want.leased);
        let (pp, dp) = diff(&pushed.plain, &want.plain);
        self.write(client, Some(lease.id), pl, dl.into_iter().chain(dp).collect()).await?;
        self.write(client, None, pp, Vec::new()).await
    }

    async fn serve(&mut self) -> End {
        match self.session().await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn session(&mut self) -> Result<std::convert::Infallible, End> {
        let cfg = self.cfg;
        let me = cfg.host.as_str();
        let mut client = connect(cfg, self.endpoint).await?;
        // The resync: every key, then this host's own brought in line.
        self.read_all(&mut client).await?;
        self.link.update(|s| s.resyncs += 1);
        self.publish();
        self.persist();
        // The lease after the read and the rebuild, which can take longer
        // than its TTL with a large cluster.
        let ttl_s = i64::try_from(cfg.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = client.lease_grant(ttl_s, None).await.map_err(down("lease grant"))?;
        let lease = Lease::granted(grant.id(), grant.ttl());
        let (mut keeper, mut alive) = client.lease_keep_alive(lease.id).await.map_err(down("lease keep-alive"))?;
        let host = HostValue {
            host: me.to_string(),
            lease_ttl_s: grant.ttl(),
            granted_unix_ms: unix_ms(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let host_json = serde_json::to_string(&host).unwrap_or_default();
        client.put(self.keys.host(me), host_json, Some(PutOptions::new().with_lease(lease.id))).await.map_err(down("put"))?;
        let mut exports = self.link.subscribe();
        let export: Arc<Export> = exports.borrow_and_update().clone();
        let mut pushed = self.entries.own(me);
        // Keys under an older lease of this host are written again under
        // the new one: nothing of it counts as written.
        pushed.leased.clear();
        let stale: Vec<String> = self.entries.own(me).leased.into_keys().collect();
        let want = desired(self.keys, me, &export);
        let stale = stale.into_iter().filter(|k| !want.leased.contains_key(k)).collect();
        self.write(&mut client, None, Vec::new(), stale).await?;
        self.push(&mut client, &lease, &pushed, &want).await?;
        pushed = want;
        self.link.set_connected(true);
        self.joined = true;
        self.link.update(|s| {
            s.lease = Some(lease);
            s.last_error = None;
        });
        if let Some(t) = self.down_since.take() {
            tracing::info!("cluster: etcd answers again after {:.1} s", t.elapsed().as_secs_f64());
        }
        tracing::info!(
            "cluster: joined as host {me} through {}: {} keys read at revision {}, lease {} of {} s",
            self.endpoint,
            self.entries.len(),
            self.revision,
            lease.id_hex(),
            lease.ttl.as_secs()
        );

        let opts = WatchOptions::new().with_prefix().with_start_revision(self.revision + 1);
        let mut watch = client.watch(self.keys.all(), Some(opts)).await.map_err(down("watch"))?;
        let mut tick = tokio::time::interval(lease.keep_alive_every());
        let mut persist = tokio::time::interval(PERSIST_EVERY);
        let mut last_alive = Instant::now();
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    // This host's instances leave the other hosts' answers now
                    // rather than when the lease expires.
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease.id)).await;
                    return Err(End::Stopped);
                }
                _ = tick.tick() => {
                    if last_alive.elapsed() > lease.ttl {
                        return Err(End::Down(format!("no keep-alive answer for {} s, the lease's TTL", lease.ttl.as_secs())));
                    }
                    keeper.keep_alive().await.map_err(down("lease keep-alive"))?;
                }
                m = alive.message() => match m {
                    Ok(Some(r)) if r.ttl() > 0 => last_alive = Instant::now(),
                    Ok(Some(_)) => return Err(End::Resync(format!("lease {} expired", lease.id_hex()))),
                    Ok(None) => return Err(End::Down("the keep-alive stream ended".into())),
                    Err(e) => return Err(End::Down(format!("lease keep-alive: {e}"))),
                },
                m = watch.message() => {
                    // Everything the stream already holds, then one
                    // rebuild: a burst of changes costs one snapshot.
                    let mut changed = self.apply(m)?;
                    while let Some(m) = watch.message().now_or_never() {
                        changed |= self.apply(m)?;
                    }
                    if changed {
                        self.publish();
                    }
                }
                r = exports.changed() => {
                    if r.is_err() {
                        return Err(End::Stopped);
                    }
                    let export: Arc<Export> = exports.borrow_and_update().clone();
                    let want = desired(self.keys, me, &export);
                    self.push(&mut client, &lease, &pushed, &want).await?;
                    pushed = want;
                }
                _ = persist.tick(), if self.dirty => self.persist(),
            }
        }
    }
}
