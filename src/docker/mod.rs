//! The Docker provider: kdns follows the Docker engine's API and serves the
//! running containers of the served networks as local records.
//!
//! It runs on a thread of its own with a single-threaded tokio runtime
//! (the Docker client, bollard, is async); nothing of it touches the
//! workers: what it learns becomes a [`model::Layer`] that the records
//! store merges with the records file and the API's changes and sends to
//! the workers as a new snapshot, like any other change.
//!
//! A session: connect (the socket is tried first, so that "no socket",
//! "permission denied" and "dockerd is down" get a log line that says so),
//! subscribe to the engine's events from one second before now, list the
//! networks and the running containers, inspect each (a full resync), then
//! apply events as they come: every container event re-inspects that
//! container (so a missed or reordered event cannot leave a stale answer),
//! network create/destroy re-reads the networks. When the engine goes away
//! the session ends; the records learnt stay served, and the next session,
//! after a backoff of 1 s doubling to 30 s, starts with a full resync.

pub mod model;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum, HealthStatusEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, ListNetworksOptions};
use bollard::Docker;
use futures_util::{FutureExt, StreamExt};

use crate::config::DockerSettings;
use crate::records::Store;
use model::{Container, Endpoint, Health, Layer, Model, Network, Selection};

/// First wait after a failed session; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest wait for one API answer (not the event stream).
const REQUEST_TIMEOUT_S: u64 = 30;
/// Containers inspected at once during a resync.
const INSPECT_CONCURRENCY: usize = 16;
/// Most instance changes logged one by one per batch of events.
const CHANGES_LOGGED: usize = 20;
/// The container events that can change an answer; the engine is asked for
/// these alone. A healthcheck runs as an exec (three events a run per
/// container), attach, resize, top... change nothing served.
/// `health_status` matches "health_status: healthy" and the like.
const CONTAINER_ACTIONS: [&str; 12] =
    ["start", "restart", "die", "stop", "kill", "destroy", "rename", "pause", "unpause", "health_status", "update", "oom"];
/// The network events that can change an answer.
const NETWORK_ACTIONS: [&str; 5] = ["connect", "disconnect", "create", "destroy", "remove"];

/// The running provider; stop it with [`Provider::shutdown`].
#[derive(Debug)]
pub struct Provider {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Provider {
    /// Stops following the engine (the records learnt stay in the store).
    pub fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the provider thread.
pub fn start(s: &DockerSettings, store: Arc<Store>) -> std::io::Result<Provider> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = s.clone();
    let thread = std::thread::Builder::new().name("kdns-docker".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("Docker provider: cannot start its runtime: {e}; Docker names are not served");
                return;
            }
        };
        rt.block_on(run(s, store, rx));
    })?;
    Ok(Provider { stop: Some(tx), thread: Some(thread) })
}

/// How a session ended.
enum End {
    /// It never got to a resync: the engine is unreachable.
    Unreachable(String),
    /// It was synced, then the engine went away.
    Lost(String),
}

async fn run(s: DockerSettings, store: Arc<Store>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let sel = Selection { networks: s.networks.clone(), listen: s.listen.clone(), serve_starting: s.serve_starting };
    let mut model = Model::default();
    // The instances the store serves from Docker (kept across sessions, as
    // the store keeps them), for the log of what each change did.
    let mut seen = Seen::new();
    let mut backoff = BACKOFF_MIN;
    let mut last_error: Option<String> = None;
    let mut ever_synced = false;
    loop {
        let end = tokio::select! {
            e = session(&s, &sel, &store, &mut model, &mut seen, &mut ever_synced) => e,
            _ = &mut stop => return,
        };
        let msg = match end {
            End::Lost(m) => {
                backoff = BACKOFF_MIN;
                last_error = None;
                m
            }
            End::Unreachable(m) => m,
        };
        let (services, instances, _) = store.docker_summary();
        if last_error.as_deref() != Some(msg.as_str()) {
            let kept = if services == 0 {
                "every other record is served as before".to_string()
            } else {
                format!("the {services} Docker services ({instances} instances) learnt before stay served until then, and every other record as before")
            };
            tracing::warn!(
                "Docker provider: {msg}; retrying with backoff ({} s, up to {} s); {kept}",
                backoff.as_secs(),
                BACKOFF_MAX.as_secs()
            );
            last_error = Some(msg);
        } else {
            tracing::debug!("Docker provider: still unreachable: {msg}");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Why the socket cannot be used, in words an operator acts on.
async fn probe_socket(path: &Path) -> Result<(), String> {
    use std::io::ErrorKind;
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            ErrorKind::NotFound => format!("no Docker API socket at {} (is dockerd running, and the socket mounted here?)", path.display()),
            ErrorKind::PermissionDenied => {
                format!("permission denied on the Docker API socket {} (kdns needs root or the socket's group)", path.display())
            }
            ErrorKind::ConnectionRefused => format!("nothing listens on the Docker API socket {} (dockerd is down)", path.display()),
            _ => format!("cannot connect to the Docker API socket {}: {e}", path.display()),
        }),
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

async fn session(s: &DockerSettings, sel: &Selection, store: &Store, model: &mut Model, seen: &mut Seen, ever_synced: &mut bool) -> End {
    let path = s.socket.display().to_string();
    if let Err(m) = probe_socket(&s.socket).await {
        return End::Unreachable(m);
    }
    let docker = match Docker::connect_with_unix(&path, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION) {
        Ok(d) => d,
        Err(e) => return End::Unreachable(format!("cannot use the Docker API socket {path}: {}", chain(&e))),
    };
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => return End::Unreachable(format!("the Docker engine at {path} did not answer its version: {}", chain(&e))),
    };
    let version = docker.version().await.ok().and_then(|v| v.version).unwrap_or_else(|| "?".into());

    // Events first (replayed from a second ago), then the lists: nothing
    // that happens during the resync is missed.
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs().saturating_sub(1));
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["container".to_string(), "network".to_string()]),
        ("event".to_string(), CONTAINER_ACTIONS.iter().chain(&NETWORK_ACTIONS).map(|a| a.to_string()).collect()),
    ]);
    let mut events = docker.events(Some(EventsOptions { since: Some(since.to_string()), until: None, filters: Some(filters) })).boxed();

    let t0 = Instant::now();
    let nets = match networks(&docker).await {
        Ok(n) => n,
        Err(e) => return End::Unreachable(format!("listing networks failed: {e}")),
    };
    let mut served = sel.served(&nets);
    let list = match docker.list_containers(Some(ListContainersOptions { all: false, ..Default::default() })).await {
        Ok(l) => l,
        Err(e) => return End::Unreachable(format!("listing containers failed: {}", chain(&e))),
    };
    let ids: Vec<String> = list.into_iter().filter_map(|c| c.id).collect();
    let inspected: Vec<Result<Option<Container>, String>> =
        futures_util::stream::iter(ids.iter().map(|id| inspect(&docker, id))).buffer_unordered(INSPECT_CONCURRENCY).collect().await;
    let mut containers = Vec::with_capacity(inspected.len());
    for r in inspected {
        match r {
            Ok(Some(c)) => containers.push(c),
            Ok(None) => {} // gone meanwhile
            Err(e) => return End::Unreachable(format!("inspecting containers failed: {e}")),
        }
    }
    model.replace_all(containers);
    let (changed, summary) = publish(store, model, seen, &served, sel, false);
    let took = t0.elapsed();
    if served.is_empty() {
        tracing::warn!("Docker provider: {}", no_network(sel, &nets));
    }
    tracing::info!(
        "Docker provider: {} Docker {version} at {path}; resync: {} running containers, {summary}, on network{} [{}] ({} ms{})",
        if *ever_synced { "reconnected to" } else { "connected to" },
        ids.len(),
        if served.len() == 1 { "" } else { "s" },
        served.join(", "),
        took.as_millis(),
        if changed { "" } else { ", no change" }
    );
    *ever_synced = true;

    loop {
        let first = match events.next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => return End::Lost(format!("the Docker event stream broke: {}", chain(&e))),
            None => return End::Lost("the Docker engine closed the event stream (dockerd stopped?)".into()),
        };
        // Everything already queued is applied in one go.
        let mut batch = vec![first];
        while let Some(Some(r)) = events.next().now_or_never() {
            match r {
                Ok(e) => batch.push(e),
                Err(e) => return End::Lost(format!("the Docker event stream broke: {}", chain(&e))),
            }
        }
        let mut ids: Vec<String> = Vec::new();
        let mut nets_changed = false;
        for e in &batch {
            match relevant(e) {
                Some(Target::Container(id)) if !ids.contains(&id) => ids.push(id),
                Some(Target::Networks) => nets_changed = true,
                Some(Target::Container(_)) | None => {}
            }
        }
        if nets_changed {
            match networks(&docker).await {
                Ok(n) => {
                    let now = sel.served(&n);
                    if now != served {
                        tracing::info!("Docker provider: networks served now [{}]", now.join(", "));
                        if now.is_empty() {
                            tracing::warn!("Docker provider: {}", no_network(sel, &n));
                        }
                        served = now;
                    }
                }
                Err(e) => return End::Lost(format!("listing networks failed: {e}")),
            }
        }
        for id in &ids {
            match inspect(&docker, id).await {
                Ok(Some(c)) => model.upsert(c),
                Ok(None) => model.remove(id),
                Err(e) => return End::Lost(format!("inspecting container {} failed: {e}", model::short(id))),
            }
        }
        if !ids.is_empty() || nets_changed {
            publish(store, model, seen, &served, sel, true);
        }
    }
}

fn no_network(sel: &Selection, nets: &[Network]) -> String {
    let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
    if sel.networks.is_empty() {
        let listen: Vec<String> = sel.listen.iter().map(IpAddr::to_string).collect();
        format!(
            "no Docker network holds a listen address ({}); no container is served until one does, or docker.networks names one (networks now: {})",
            listen.join(", "),
            names.join(", ")
        )
    } else {
        format!(
            "no Docker network is called [{}] (by name or compose name); no container is served until one exists (networks now: {})",
            sel.networks.join(", "),
            names.join(", ")
        )
    }
}

enum Target {
    Container(String),
    Networks,
}

/// What an event asks to look at again.
fn relevant(e: &EventMessage) -> Option<Target> {
    let action = e.action.as_deref().unwrap_or("");
    let actor = e.actor.as_ref()?;
    match e.typ {
        Some(EventMessageTypeEnum::CONTAINER) => {
            let verb = action.split(':').next().unwrap_or("");
            CONTAINER_ACTIONS.contains(&verb).then(|| actor.id.clone()).flatten().map(Target::Container)
        }
        Some(EventMessageTypeEnum::NETWORK) => match action {
            "connect" | "disconnect" => actor.attributes.as_ref()?.get("container").cloned().map(Target::Container),
            "create" | "destroy" | "remove" => Some(Target::Networks),
            _ => None,
        },
        _ => None,
    }
}

async fn networks(docker: &Docker) -> Result<Vec<Network>, String> {
    let list = docker.list_networks(None::<ListNetworksOptions>).await.map_err(|e| chain(&e))?;
    Ok(list
        .into_iter()
        .filter_map(|n| {
            let name = n.name?;
            let compose_name = n.labels.as_ref().and_then(|l| l.get(model::COMPOSE_NETWORK).cloned());
            let subnets = n
                .ipam
                .and_then(|i| i.config)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.subnet.as_deref().and_then(model::parse_subnet))
                .collect();
            Some(Network { name, compose_name, subnets })
        })
        .collect())
}

/// The container as the engine sees it now; `None` if it no longer exists.
async fn inspect(docker: &Docker, id: &str) -> Result<Option<Container>, String> {
    match docker.inspect_container(id, None).await {
        Ok(r) => Ok(container_of(r)),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(chain(&e)),
    }
}

fn container_of(r: ContainerInspectResponse) -> Option<Container> {
    let id = r.id?;
    let name = r.name.unwrap_or_default().trim_start_matches('/').to_string();
    let labels: BTreeMap<String, String> = r.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect();
    let state = r.state.unwrap_or_default();
    let running = state.running.unwrap_or(false) && !state.paused.unwrap_or(false) && !state.restarting.unwrap_or(false);
    let health = match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    let mut endpoints: Vec<Endpoint> = r
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(network, ep)| {
            let addrs = [ep.ip_address.as_deref(), ep.global_ipv6_address.as_deref()]
                .into_iter()
                .flatten()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .collect();
            Endpoint { network, addrs, aliases: ep.aliases.unwrap_or_default() }
        })
        .collect();
    endpoints.sort_by(|a, b| a.network.cmp(&b.network));
    Some(Container { id, name, created: r.created.unwrap_or_default(), labels, running, health, endpoints })
}

/// What the log says of an instance: (service, number) -> (container, in the answers, health).
type Seen = BTreeMap<(String, u32), (String, bool, &'static str)>;

fn instances(l: &Layer) -> Seen {
    l.services
        .iter()
        .flat_map(|s| s.instances.iter().map(move |i| ((s.def.name.clone(), i.number), (i.id.clone(), i.healthy, i.health.name()))))
        .collect()
}

/// Computes the layer, logs its warnings (and, after events, what changed
/// since `seen`, the instances last handed over), and hands it to the
/// store. Returns whether the records changed and a summary for the log.
fn publish(store: &Store, model: &mut Model, seen: &mut Seen, served: &[String], sel: &Selection, log_changes: bool) -> (bool, String) {
    let (layer, warnings) = model.layer(served, sel);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let summary = format!(
        "{} services, {} instances, {} names",
        layer.services.len(),
        layer.services.iter().map(|s| s.instances.len()).sum::<usize>(),
        layer.names.len()
    );
    let now = instances(&layer);
    match store.set_docker(layer) {
        Ok(Some(c)) => {
            if log_changes {
                log_diff(seen, &now, c.serial);
            }
            *seen = now;
            (true, summary)
        }
        Ok(None) => (false, summary),
        Err(e) => {
            tracing::error!("Docker provider: the records could not be rebuilt with the containers' names: {e}; serving the previous ones");
            (false, summary)
        }
    }
}

fn log_diff(before: &Seen, after: &Seen, serial: u32) {
    let mut lines = Vec::new();
    let keys: HashSet<&(String, u32)> = before.keys().chain(after.keys()).collect();
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort();
    for k in keys {
        let (svc, n) = k;
        match (before.get(k), after.get(k)) {
            (None, Some((c, h, why))) => lines
                .push(format!("{svc}-{n} ({c}) joined {svc}{}", if *h { String::new() } else { format!(" ({why}: not in the answers)") })),
            (Some((c, _, _)), None) => lines.push(format!("{svc}-{n} ({c}) left {svc}")),
            (Some((c0, h0, _)), Some((c1, h1, why))) if c0 != c1 || h0 != h1 => lines.push(format!(
                "{svc}-{n} ({c1}) {}",
                if *h1 { format!("is back in the answers ({why})") } else { format!("left the answers ({why})") }
            )),
            _ => {}
        }
    }
    let n = lines.len();
    for l in lines.iter().take(CHANGES_LOGGED) {
        tracing::info!(serial, "Docker: {l}");
    }
    if n > CHANGES_LOGGED {
        tracing::info!(serial, "Docker: ... and {} more instance changes", n - CHANGES_LOGGED);
    }
}
