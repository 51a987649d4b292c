//! Several hosts sharing records through etcd (docs/cluster.md): the
//! values kdns writes under its prefix, and `GET /v1/cluster`
//! ([`ClusterView`]).
//!
//! Values are JSON in the records schema ([`crate::records`]); every value
//! names the host that wrote it. A value that does not decode is skipped
//! (logged and counted), never served.

use serde::{Deserialize, Serialize};

use crate::records::{InstanceDef, RecordDef, ServiceDef};

/// The layout version, the last part of the default prefix (`/kdns/v1`).
pub const LAYOUT_VERSION: u32 = 1;

/// `<prefix>/hosts/<host>`, under the host's lease: the host is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostValue {
    /// The host id (`[cluster] host_id`).
    pub host: String,
    /// The TTL its lease was granted with, seconds.
    pub lease_ttl_s: i64,
    /// When the lease was granted (Unix time, ms).
    pub granted_unix_ms: u64,
    /// The kdns version.
    pub version: String,
}

/// `<prefix>/instances/<host>/<service>/<id>`, under the host's lease: one
/// instance of a service, as that host's checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceValue {
    /// The host that runs it (and keeps the lease).
    pub host: String,
    /// The service label.
    pub service: String,
    /// Its id and addresses.
    pub instance: InstanceDef,
    /// Whether its host's health checks (or a forced health) put it in the
    /// answers; every host answers it only while this is true.
    pub healthy: bool,
}

/// `<prefix>/services/<service>`, without a lease: a service definition
/// shared by the cluster (its instances are separate keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceValue {
    /// The host that wrote it last.
    pub owner: String,
    /// The definition, without instances.
    pub service: ServiceDef,
}

/// `<prefix>/records/<name>/<type>/<n>`, without a lease: a static record
/// shared by the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordValue {
    /// The host that wrote it.
    pub owner: String,
    /// The record.
    pub record: RecordDef,
}

/// One host as this kdns sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    /// Its id.
    pub host: String,
    /// This kdns's own host.
    pub local: bool,
    /// Whether its host key (under its lease) is in etcd now.
    pub alive: bool,
    /// Seconds since its lease was granted (it changes when the host
    /// reconnects); none if its host key is gone.
    pub lease_age_s: Option<f64>,
    /// The TTL of its lease, seconds.
    pub lease_ttl_s: Option<i64>,
    /// Its instances in etcd.
    pub instances: usize,
    /// Of them, healthy (answered).
    pub healthy: usize,
    /// Services and static records it wrote last.
    pub services: usize,
    /// Static records it wrote.
    pub records: usize,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Whether `[cluster]` is on (etcd endpoints configured).
    pub enabled: bool,
    /// This host's id.
    pub host: String,
    /// The key prefix.
    pub prefix: String,
    /// Whether kdns is connected to etcd (it has a lease and a watch).
    pub connected: bool,
    /// Why it is not, the last error (no secret in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The etcd revision of the records served.
    pub revision: i64,
    /// This host's lease, hex (an id, never a TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// Full reads of the prefix (start, reconnect, compaction, cancelled watch).
    pub resyncs: u64,
    /// Values skipped because they did not decode or did not match their key.
    pub skipped: u64,
    /// Keys this host wrote (put).
    pub puts: u64,
    /// Keys this host deleted.
    pub deletes: u64,
    /// Every host with keys or a lease, this one first.
    pub hosts: Vec<HostView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_value_round_trips_and_refuses_unknown_fields() {
        let v = InstanceValue {
            host: "a".into(),
            service: "web".into(),
            instance: InstanceDef { id: "c1".into(), addrs: vec!["10.0.0.1".into()] },
            healthy: true,
        };
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(s, r#"{"host":"a","service":"web","instance":{"id":"c1","addrs":["10.0.0.1"]},"healthy":true}"#);
        assert_eq!(serde_json::from_str::<InstanceValue>(&s).unwrap(), v);
        assert!(serde_json::from_str::<InstanceValue>(
            r#"{"host":"a","service":"web","instance":{"id":"c1","addrs":[]},"healthy":true,"x":1}"#
        )
        .is_err());
    }
}
