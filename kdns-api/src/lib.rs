//! The schema of kdns's control API and records model, defined once for
//! the daemon and for `kdns-ctl`: the serde types of what is written (the
//! records file, the state file, request bodies), their validation into
//! the types of `kdns_core::records`, what the daemon answers (records,
//! changes, statistics) and its errors. `docs/control-api.md` describes
//! the same JSON for people.
//!
//! * [`records`]: services, instances, ports, health checks and static
//!   records as written, and every rule they must follow.
//! * [`view`]: `GET /v1/records` and the answer to a change.
//! * [`stats`]: `GET /v1/stats` and `GET /v1/backends`.
//! * [`cluster`]: `GET /v1/cluster`, the hosts sharing records through
//!   etcd, and the values kdns writes there.
//! * [`error`]: a field at fault, a refused request and its kind (which
//!   the HTTP layer maps to a status), the error body.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod error;
pub mod records;
pub mod stats;
pub mod view;

pub use error::{Error, ErrorBody, ErrorKind, FieldError};
