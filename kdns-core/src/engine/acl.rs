//! Which clients may ask: a list of networks.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNetError(String);

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IpNetError {}

impl IpNet {
    /// The network `addr/prefix`; host bits are cleared. `None` if the
    /// prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then(|| IpNet { addr: mask(addr, prefix), prefix })
    }

    /// The network's address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// matches IPv4 networks, as dual-stack sockets report IPv4 clients so.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;
    /// `addr/prefix`, or a bare address (a host network).
    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| IpNetError(format!("'{s}' is not an IP address or network")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| IpNetError(format!("'{s}': prefix length must be 0..={max}")))?,
            None => max,
        };
        IpNet::new(addr, prefix).ok_or_else(|| IpNetError(format!("'{s}': bad prefix")))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The networks allowed to query. An empty list allows nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    nets: Vec<IpNet>,
    /// (network, mask) as integers: the check is a mask and a compare.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Acl {
    /// An ACL of `nets`.
    pub fn new(nets: Vec<IpNet>) -> Acl {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in &nets {
            match n.addr {
                IpAddr::V4(a) => v4.push((u32::from(a), u32::MAX.checked_shl(32 - u32::from(n.prefix)).unwrap_or(0))),
                IpAddr::V6(a) => v6.push((u128::from(a), u128::MAX.checked_shl(128 - u32::from(n.prefix)).unwrap_or(0))),
            }
        }
        Acl { nets, v4, v6 }
    }

    /// Loopback only (127.0.0.0/8 and ::1).
    pub fn loopback() -> Acl {
        Acl::new(vec!["127.0.0.0/8".parse().expect("literal"), "::1/128".parse().expect("literal")])
    }

    /// Whether `ip` may query.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.allows_v4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => self.allows_v4(u32::from(m)),
                None => {
                    let a = u128::from(a);
                    self.v6.iter().any(|&(n, m)| a & m == n)
                }
            },
        }
    }

    #[inline]
    fn allows_v4(&self, a: u32) -> bool {
        self.v4.iter().any(|&(n, m)| a & m == n)
    }

    /// The networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_hosts() {
        let n: IpNet = "10.1.2.3/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert!(n.contains("10.1.255.1".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()), "mapped IPv4");
        let v6: IpNet = "fd00:dead::/32".parse().unwrap();
        assert!(v6.contains("fd00:dead:1::5".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!("1.2.3.4".parse::<IpNet>().unwrap().contains("1.2.3.4".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        let acl = Acl::loopback();
        assert!(acl.allows("127.0.0.53".parse().unwrap()) && acl.allows("::1".parse().unwrap()));
        assert!(!acl.allows("192.0.2.1".parse().unwrap()));
        assert!(!Acl::default().allows("127.0.0.1".parse().unwrap()));
    }
}
