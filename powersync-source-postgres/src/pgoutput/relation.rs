//! The Relation message ('R'): a table's identity and column list, sent before the first change
//! to that table in a session and again whenever its definition changed.

use std::fmt;
use std::iter::FusedIterator;

use super::error::DecodeErrorKind;
use super::reader::{Fail, Reader};

/// A table description (`R`). Columns are validated at decode and iterated without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation<'a> {
    /// Xid of the streamed (sub)transaction; present only inside a stream block (protocol ≥ 2).
    pub xid: Option<u32>,
    /// OID of the relation; Insert/Update/Delete/Truncate refer to it.
    pub oid: u32,
    /// Schema name (empty string for `pg_catalog`).
    pub namespace: &'a str,
    /// Table name.
    pub name: &'a str,
    /// The table's `REPLICA IDENTITY` setting.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in table order (generated columns excluded).
    pub columns: RelationColumns<'a>,
}

impl<'a> Relation<'a> {
    /// Decodes the body after the type byte (and xid).
    #[inline]
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<u32>) -> Result<Self, Fail> {
        let oid = r.u32()?;
        let namespace = r.cstr("namespace")?;
        let name = r.cstr("relation name")?;
        let ri = r.u8()?;
        let Some(replica_identity) = ReplicaIdentity::from_byte(ri) else {
            let at = r.offset() - 1;
            return Err(r.fail_at(DecodeErrorKind::UnknownReplicaIdentity(ri), at));
        };
        let count = r.u16()?;
        let start = r.rest();
        for _ in 0..count {
            r.u8()?;
            r.cstr("column name")?;
            r.u32()?;
            r.i32()?;
        }
        let Some(data) = start.get(..start.len() - r.rest().len()) else {
            return Err(Fail); // unreachable: the reader only moves forward
        };
        Ok(Relation {
            xid,
            oid,
            namespace,
            name,
            replica_identity,
            columns: RelationColumns { count, data },
        })
    }
}

/// `REPLICA IDENTITY` of a table (`pg_class.relreplident`): which old values Update and Delete
/// carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if any (old key sent only when it changed, as `K`).
    Default,
    /// `n`: nothing; Update/Delete carry no old values (Delete is then not published).
    Nothing,
    /// `f`: all columns; old rows are sent whole (`O`).
    Full,
    /// `i`: the columns of a chosen unique index (`K`).
    Index,
}

impl ReplicaIdentity {
    /// From the wire byte (`d`, `n`, `f`, `i`).
    #[inline]
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(ReplicaIdentity::Default),
            b'n' => Some(ReplicaIdentity::Nothing),
            b'f' => Some(ReplicaIdentity::Full),
            b'i' => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }

    /// The wire byte.
    #[inline]
    pub fn as_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelationColumn<'a> {
    /// Column flags: bit 1 ([`RelationColumn::KEY`]) marks a replica identity (key) column.
    pub flags: u8,
    /// Column name.
    pub name: &'a str,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 when none.
    pub type_modifier: i32,
}

impl RelationColumn<'_> {
    /// The flag bit marking a column that is part of the replica identity.
    pub const KEY: u8 = 1;

    /// True when the column is part of the replica identity (key).
    #[inline]
    pub fn is_key(&self) -> bool {
        self.flags & Self::KEY != 0
    }
}

/// The validated column list of a [`Relation`]; iterate it for [`RelationColumn`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelationColumns<'a> {
    count: u16,
    data: &'a [u8],
}

impl<'a> RelationColumns<'a> {
    /// Number of columns.
    #[inline]
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the relation has no published columns.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The columns, in table order.
    #[inline]
    pub fn iter(&self) -> RelationColumnIter<'a> {
        RelationColumnIter {
            remaining: self.count,
            reader: Reader::new(self.data, "Relation"),
        }
    }
}

impl fmt::Debug for RelationColumns<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for RelationColumns<'a> {
    type Item = RelationColumn<'a>;
    type IntoIter = RelationColumnIter<'a>;
    #[inline]
    fn into_iter(self) -> RelationColumnIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &RelationColumns<'a> {
    type Item = RelationColumn<'a>;
    type IntoIter = RelationColumnIter<'a>;
    #[inline]
    fn into_iter(self) -> RelationColumnIter<'a> {
        self.iter()
    }
}

/// Iterator over the [`RelationColumn`]s of a [`Relation`].
#[derive(Debug, Clone)]
pub struct RelationColumnIter<'a> {
    remaining: u16,
    reader: Reader<'a>,
}

impl<'a> RelationColumnIter<'a> {
    fn read(&mut self) -> Result<RelationColumn<'a>, Fail> {
        let r = &mut self.reader;
        Ok(RelationColumn {
            flags: r.u8()?,
            name: r.cstr("column name")?,
            type_oid: r.u32()?,
            type_modifier: r.i32()?,
        })
    }
}

impl<'a> Iterator for RelationColumnIter<'a> {
    type Item = RelationColumn<'a>;

    #[inline]
    fn next(&mut self) -> Option<RelationColumn<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // Validated by `Relation::read`; an error cannot happen, but ends iteration if it did.
        match self.read() {
            Ok(c) => {
                self.remaining -= 1;
                Some(c)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for RelationColumnIter<'_> {}
impl FusedIterator for RelationColumnIter<'_> {}
