//! DNS code points as newtypes, so unknown values survive a round trip.

use core::fmt;

macro_rules! codes {
    ($(#[$m:meta])* $name:ident($repr:ty) { $($(#[$cm:meta])* $c:ident = $v:expr, $s:expr;)* }) => {
        $(#[$m])*
        #[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $repr);
        impl $name {
            $($(#[$cm])* pub const $c: $name = $name($v);)*
            /// The mnemonic, if this value has one.
            pub fn mnemonic(self) -> Option<&'static str> {
                match self.0 { $($v => Some($s),)* _ => None }
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.mnemonic() {
                    Some(s) => f.write_str(s),
                    None => write!(f, "{}{}", stringify!($name).to_uppercase(), self.0),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Debug::fmt(self, f) }
        }
        impl From<$repr> for $name { fn from(v: $repr) -> Self { $name(v) } }
    };
}

codes! {
    /// Resource record type (RFC 1035 3.2.2 and later).
    Rtype(u16) {
        /// IPv4 address.
        A = 1, "A";
        /// Authoritative name server.
        NS = 2, "NS";
        /// Canonical name.
        CNAME = 5, "CNAME";
        /// Start of authority.
        SOA = 6, "SOA";
        /// Domain name pointer.
        PTR = 12, "PTR";
        /// Mail exchange.
        MX = 15, "MX";
        /// Text strings.
        TXT = 16, "TXT";
        /// IPv6 address.
        AAAA = 28, "AAAA";
        /// Service location.
        SRV = 33, "SRV";
        /// Delegation name.
        DNAME = 39, "DNAME";
        /// EDNS(0) pseudo record.
        OPT = 41, "OPT";
        /// DNSSEC signature.
        RRSIG = 46, "RRSIG";
        /// Service binding.
        SVCB = 64, "SVCB";
        /// HTTPS service binding.
        HTTPS = 65, "HTTPS";
        /// Zone transfer (query only).
        AXFR = 252, "AXFR";
        /// Incremental zone transfer (query only).
        IXFR = 251, "IXFR";
        /// Any type (query only).
        ANY = 255, "ANY";
    }
}

codes! {
    /// Record class.
    Class(u16) {
        /// Internet.
        IN = 1, "IN";
        /// Chaos.
        CH = 3, "CH";
        /// No class (RFC 2136).
        NONE = 254, "NONE";
        /// Any class.
        ANY = 255, "ANY";
    }
}

codes! {
    /// Header opcode (4 bits).
    Opcode(u8) {
        /// Standard query.
        QUERY = 0, "QUERY";
        /// Inverse query (obsolete).
        IQUERY = 1, "IQUERY";
        /// Server status.
        STATUS = 2, "STATUS";
        /// Zone change notification.
        NOTIFY = 4, "NOTIFY";
        /// Dynamic update.
        UPDATE = 5, "UPDATE";
    }
}

codes! {
    /// Response code; values above 15 need EDNS (the upper 8 bits live in OPT).
    Rcode(u16) {
        /// No error.
        NOERROR = 0, "NOERROR";
        /// Format error.
        FORMERR = 1, "FORMERR";
        /// Server failure.
        SERVFAIL = 2, "SERVFAIL";
        /// Name does not exist.
        NXDOMAIN = 3, "NXDOMAIN";
        /// Not implemented.
        NOTIMP = 4, "NOTIMP";
        /// Refused.
        REFUSED = 5, "REFUSED";
        /// Bad OPT version (EDNS, 16).
        BADVERS = 16, "BADVERS";
    }
}

impl Rcode {
    /// The low 4 bits that go in the header.
    pub const fn header_bits(self) -> u8 {
        (self.0 & 0x0f) as u8
    }
    /// The upper 8 bits that go in the OPT record's TTL field.
    pub const fn extended_bits(self) -> u8 {
        ((self.0 >> 4) & 0xff) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_unknown_values() {
        assert_eq!(format!("{:?}", Rtype::AAAA), "AAAA");
        assert_eq!(format!("{}", Rtype(999)), "RTYPE999");
        assert_eq!(format!("{}", Rcode::BADVERS), "BADVERS");
        assert_eq!(Rcode::BADVERS.header_bits(), 0);
        assert_eq!(Rcode::BADVERS.extended_bits(), 1);
        assert_eq!(Opcode::from(5), Opcode::UPDATE);
        assert_eq!(Class(3).mnemonic(), Some("CH"));
    }
}
