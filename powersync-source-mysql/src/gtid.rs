//! GTID state: MariaDB GTID positions (`domain-server-seq,…`) and MySQL GTID sets
//! (`uuid:1-5:7,…`), parsed from and printed to the text each server uses.

use std::collections::BTreeMap;
use std::fmt;

/// A MariaDB GTID position: per replication domain, the last applied `server-seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MariaPos {
    domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaPos {
    /// Parses `0-1-100,1-2-7` (empty = nothing applied).
    pub fn parse(s: &str) -> Result<MariaPos, String> {
        let mut domains = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.split('-');
            let (Some(d), Some(srv), Some(seq), None) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(format!(
                    "`{part}` is not a MariaDB GTID (domain-server-sequence)"
                ));
            };
            let d: u32 = d.parse().map_err(|_| format!("bad domain in `{part}`"))?;
            let srv: u32 = srv
                .parse()
                .map_err(|_| format!("bad server id in `{part}`"))?;
            let seq: u64 = seq
                .parse()
                .map_err(|_| format!("bad sequence in `{part}`"))?;
            if domains.insert(d, (srv, seq)).is_some() {
                return Err(format!("domain {d} appears twice in `{s}`"));
            }
        }
        Ok(MariaPos { domains })
    }

    /// Records a transaction's GTID.
    pub fn apply(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }

    /// `(domain, (server, seq))` entries.
    pub fn domains(&self) -> impl Iterator<Item = (u32, (u32, u64))> + '_ {
        self.domains.iter().map(|(d, v)| (*d, *v))
    }

    /// The sequence recorded for a domain.
    pub fn seq(&self, domain: u32) -> Option<u64> {
        self.domains.get(&domain).map(|v| v.1)
    }

    /// Whether no GTID is recorded.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

impl fmt::Display for MariaPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (d, (srv, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}-{srv}-{seq}")?;
        }
        Ok(())
    }
}

/// A MySQL GTID set: per source uuid, closed intervals of transaction numbers, sorted and
/// merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MySqlGtidSet {
    sids: BTreeMap<[u8; 16], Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    /// Parses `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,…` (whitespace and newlines, as
    /// `gtid_executed` prints them, are ignored; tagged GTIDs are not supported).
    pub fn parse(s: &str) -> Result<MySqlGtidSet, String> {
        let mut set = MySqlGtidSet::default();
        let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        for part in cleaned.split(',').filter(|p| !p.is_empty()) {
            let mut it = part.split(':');
            let uuid = parse_uuid(it.next().unwrap_or_default())?;
            let mut any = false;
            for iv in it {
                any = true;
                let (a, b) = match iv.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (iv, iv),
                };
                let a: u64 = a.parse().map_err(|_| {
                    format!("bad interval `{iv}` in `{part}` (tagged GTIDs are not supported)")
                })?;
                let b: u64 = b
                    .parse()
                    .map_err(|_| format!("bad interval `{iv}` in `{part}`"))?;
                if a == 0 || b < a {
                    return Err(format!("bad interval `{iv}` in `{part}`"));
                }
                set.add_range(uuid, a, b);
            }
            if !any {
                return Err(format!("`{part}` has no interval"));
            }
        }
        Ok(set)
    }

    /// Adds one transaction number.
    pub fn add(&mut self, uuid: [u8; 16], gno: u64) {
        self.add_range(uuid, gno, gno);
    }

    fn add_range(&mut self, uuid: [u8; 16], a: u64, b: u64) {
        let ivs = self.sids.entry(uuid).or_default();
        ivs.push((a, b));
        ivs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
        for &(s, e) in ivs.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ivs = merged;
    }

    /// Per uuid, half-open `[start, end)` intervals, as `COM_BINLOG_DUMP_GTID` wants them.
    pub fn half_open(&self) -> impl Iterator<Item = ([u8; 16], Vec<(u64, u64)>)> + '_ {
        self.sids.iter().map(|(u, ivs)| {
            (
                *u,
                ivs.iter().map(|(a, b)| (*a, b.saturating_add(1))).collect(),
            )
        })
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (uuid, ivs)) in self.sids.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&powersync_source_core::normalize::uuid::format_uuid(uuid))?;
            for (a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    powersync_source_core::normalize::uuid::parse_uuid(s)
        .map_err(|e| format!("`{s}` is not a server uuid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_positions() {
        let mut p = MariaPos::parse("0-1-100, 1-2-7").unwrap();
        p.apply(0, 3, 101);
        assert_eq!(p.to_string(), "0-3-101,1-2-7");
        assert!(MariaPos::parse("0-1").is_err());
        assert!(MariaPos::parse("0-1-2,0-1-3").is_err());
        assert!(MariaPos::parse("").unwrap().is_empty());
    }

    #[test]
    fn mysql_sets() {
        let mut s = MySqlGtidSet::parse(
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,\n 00000000-0000-0000-0000-000000000001:3",
        )
        .unwrap();
        s.add(
            parse_uuid("3e11fa47-71ca-11e1-9e33-c80aa9429562").unwrap(),
            6,
        );
        assert_eq!(
            s.to_string(),
            "00000000-0000-0000-0000-000000000001:3,3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7"
        );
        let ho: Vec<_> = s.half_open().collect();
        assert_eq!(ho[1].1, vec![(1, 8)]);
        assert!(MySqlGtidSet::parse("nope:1").is_err());
        assert!(MySqlGtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:5-2").is_err());
    }
}
