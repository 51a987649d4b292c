//! What the daemon answers about its records: `GET /v1/records`
//! ([`RecordsView`]) and the outcome of a change ([`Change`]), and the
//! health an instance can be forced to ([`ForcedHealth`]).

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::records::{CheckSpec, ModeName, PortDef, RecordData};

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The records file.
    File,
    /// The API (kept in the state file).
    Runtime,
    /// The Docker engine: running containers.
    Docker,
    /// Another host, through etcd (`[cluster]`, docs/cluster.md).
    Cluster,
}

impl Source {
    /// Its name in the API (`runtime`).
    pub fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Runtime => "runtime",
            Source::Docker => "docker",
            Source::Cluster => "cluster",
        }
    }
}

/// An instance's health as the answers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Answered: its check passes, or it has none.
    Up,
    /// Not answered: its check fails.
    Down,
    /// Answered whatever its check says (`instance health ... healthy`).
    ForcedUp,
    /// Never answered (`instance health ... unhealthy`).
    ForcedDown,
    /// A container whose Docker healthcheck fails (not answered).
    Unhealthy,
    /// A container whose Docker healthcheck has not passed yet.
    Starting,
}

impl Health {
    /// Its name in the API (`forced-down`).
    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::ForcedUp => "forced-up",
            Health::ForcedDown => "forced-down",
            Health::Unhealthy => "unhealthy",
            Health::Starting => "starting",
        }
    }
}

/// The health an instance is forced to
/// (`POST /v1/services/<name>/instances/<id>/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ForcedHealth {
    /// Answered whatever its check says
    Healthy,
    /// Never answered
    Unhealthy,
    /// Its health check decides
    Auto,
}

impl ForcedHealth {
    /// Its name in the API (`healthy`).
    pub fn name(self) -> &'static str {
        match self {
            ForcedHealth::Healthy => "healthy",
            ForcedHealth::Unhealthy => "unhealthy",
            ForcedHealth::Auto => "auto",
        }
    }

    /// The state named `text`; the error names the `state` field.
    pub fn parse(text: &str) -> Result<ForcedHealth, FieldError> {
        match text {
            "healthy" => Ok(ForcedHealth::Healthy),
            "unhealthy" => Ok(ForcedHealth::Unhealthy),
            "auto" => Ok(ForcedHealth::Auto),
            other => Err(FieldError::new("state", format!("'{other}': expected healthy, unhealthy or auto"))),
        }
    }

    /// Whether the instance is forced in (`Some(true)`), out, or not forced.
    pub fn forced(self) -> Option<bool> {
        match self {
            ForcedHealth::Healthy => Some(true),
            ForcedHealth::Unhealthy => Some(false),
            ForcedHealth::Auto => None,
        }
    }
}

/// The outcome of a change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The new snapshot's serial.
    pub serial: u32,
    /// From sending the snapshot to the last worker's acknowledgement, in
    /// milliseconds (3 decimals); the wait if some worker did not
    /// acknowledge within 1 s.
    pub propagated_ms: f64,
    /// Workers the snapshot was sent to.
    pub workers: usize,
    /// Of which use it now.
    pub workers_acked: usize,
}

/// The answer to a change: the [`Change`], and the number of an instance
/// just added.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Changed {
    /// The change.
    #[serde(flatten)]
    pub change: Change,
    /// The new instance's number (`<service>-<number>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<usize>,
}

/// `GET /v1/records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordsView {
    /// The serial of the records in use.
    pub serial: u32,
    /// The local domains, the first takes bare names.
    pub domains: Vec<String>,
    /// TTL of answers without their own.
    pub default_ttl: u32,
    /// Services.
    pub services: Vec<ServiceView>,
    /// Static records.
    pub records: Vec<RecordView>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Its label.
    pub name: String,
    /// How its name is answered.
    pub mode: ModeName,
    /// TTL of its answers (its own, else the default).
    pub ttl: u32,
    /// SRV ports.
    pub ports: Vec<PortDef>,
    /// Its health check with every default filled in.
    pub check: Option<CheckSpec>,
    /// Where it comes from.
    pub source: Source,
    /// Its instances, in order.
    pub instances: Vec<InstanceView>,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// `<service>-<number>`.
    pub number: u64,
    /// Its id.
    pub id: String,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Whether it is answered.
    pub healthy: bool,
    /// Why.
    pub health: Health,
    /// Health checks passed.
    pub checks_ok: u64,
    /// Health checks failed.
    pub checks_failed: u64,
    /// The last failed check's error.
    pub last_error: Option<String>,
    /// Where it comes from.
    pub source: Source,
}

/// A static record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    /// Owner name.
    pub name: String,
    /// A, AAAA, CNAME, TXT, SRV or PTR.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Its TTL (its own, else the default).
    pub ttl: u32,
    /// Its data.
    pub data: RecordData,
    /// Where it comes from.
    pub source: Source,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_wire_spelling() {
        for h in [Health::Up, Health::Down, Health::ForcedUp, Health::ForcedDown, Health::Unhealthy, Health::Starting] {
            assert_eq!(serde_json::to_value(h).unwrap(), h.name());
        }
        for s in [Source::File, Source::Runtime, Source::Docker, Source::Cluster] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        for f in [ForcedHealth::Healthy, ForcedHealth::Unhealthy, ForcedHealth::Auto] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.name());
            assert_eq!(ForcedHealth::parse(f.name()), Ok(f));
        }
        let e = ForcedHealth::parse("ill").unwrap_err();
        assert_eq!(e.to_string(), "state: 'ill': expected healthy, unhealthy or auto");
    }

    #[test]
    fn a_change_with_and_without_a_number() {
        let change = Change { serial: 3, propagated_ms: 0.25, workers: 2, workers_acked: 2 };
        let v = serde_json::to_string(&Changed { change, number: None }).unwrap();
        assert_eq!(v, r#"{"serial":3,"propagated_ms":0.25,"workers":2,"workers_acked":2}"#);
        let v = serde_json::to_string(&Changed { change, number: Some(4) }).unwrap();
        assert_eq!(v, r#"{"serial":3,"propagated_ms":0.25,"workers":2,"workers_acked":2,"number":4}"#);
        assert_eq!(serde_json::from_str::<Changed>(&v).unwrap().number, Some(4));
    }
}
