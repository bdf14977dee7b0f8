//! The snapshot's resume tokens: the last key of a keyed table, or the heap block ranges of a
//! table read by TID ranges; and the pieces still to read.

use powersync_source_core::normalize::json::write_json_string;
use powersync_source_core::SourceError;

/// A resume key as a JSON array of the key columns' text renderings.
pub(crate) fn encode_key(key: &[String]) -> String {
    let mut out = String::from("[");
    for (i, k) in key.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(&mut out, k);
    }
    out.push(']');
    out
}

/// Parses [`encode_key`]'s output.
pub(crate) fn decode_key(s: &str) -> Result<Vec<String>, SourceError> {
    serde_json::from_str(s).map_err(|e| {
        SourceError::config(format!("snapshot resume key `{s}` is corrupt")).with_source(e)
    })
}

/// Heap blocks already read, as stored in a resume token: `{"blocks":[[lo,hi],…]}`.
pub(crate) fn encode_blocks(done: &[(u32, u32)]) -> String {
    let ranges: Vec<String> = done.iter().map(|(lo, hi)| format!("[{lo},{hi}]")).collect();
    format!("{{\"blocks\":[{}]}}", ranges.join(","))
}

/// Parses [`encode_blocks`]' output; `None` when the progress is a key instead.
pub(crate) fn decode_blocks(s: &str) -> Result<Option<Vec<(u32, u32)>>, SourceError> {
    #[derive(serde::Deserialize)]
    struct Blocks {
        blocks: Vec<(u32, u32)>,
    }
    if !s.trim_start().starts_with('{') {
        return Ok(None);
    }
    serde_json::from_str::<Blocks>(s)
        .map(|b| Some(b.blocks))
        .map_err(|e| {
            SourceError::config(format!("snapshot resume blocks `{s}` are corrupt")).with_source(e)
        })
}

/// Adds `lo..hi` to sorted, merged ranges.
pub(crate) fn merge_range(done: &mut Vec<(u32, u32)>, lo: u32, hi: u32) {
    done.push((lo, hi));
    done.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(done.len());
    for &(l, h) in done.iter() {
        match merged.last_mut() {
            Some(last) if l <= last.1 => last.1 = last.1.max(h),
            _ => merged.push((l, h)),
        }
    }
    *done = merged;
}

/// The pieces of `0..nblocks` not in `done`, each at most `per_piece` blocks. The last piece
/// is open-ended (`u32::MAX`) so rows in blocks added since `nblocks` was measured are read too.
pub(crate) fn block_pieces(nblocks: u32, done: &[(u32, u32)], per_piece: u32) -> Vec<(u32, u32)> {
    let per_piece = per_piece.max(1);
    let mut out = Vec::new();
    let mut at = 0u32;
    let mut gaps: Vec<(u32, u32)> = Vec::new();
    for &(lo, hi) in done {
        if lo > at {
            gaps.push((at, lo));
        }
        at = at.max(hi);
    }
    if at < u32::MAX {
        gaps.push((at, u32::MAX));
    }
    for (lo, hi) in gaps {
        let end = hi.min(nblocks.max(lo));
        let mut l = lo;
        while l < end {
            let h = l.saturating_add(per_piece).min(end);
            out.push((l, h));
            l = h;
        }
        if hi == u32::MAX {
            // Everything from the measured end on, whatever the table grew to.
            out.push((end, u32::MAX));
        }
    }
    out
}

#[cfg(test)]
mod block_tests {
    use super::*;

    #[test]
    fn pieces_cover_what_is_left_and_the_open_end() {
        assert_eq!(
            block_pieces(10, &[], 4),
            vec![(0, 4), (4, 8), (8, 10), (10, u32::MAX)]
        );
        assert_eq!(
            block_pieces(10, &[(0, 4), (8, 10)], 4),
            vec![(4, 8), (10, u32::MAX)]
        );
        assert_eq!(block_pieces(0, &[], 4), vec![(0, u32::MAX)]);
        assert!(block_pieces(10, &[(0, u32::MAX)], 4).is_empty());
        let mut done = vec![];
        for (lo, hi) in [(4, 8), (0, 4), (10, u32::MAX), (8, 10)] {
            merge_range(&mut done, lo, hi);
        }
        assert_eq!(done, vec![(0, u32::MAX)]);
        let token = encode_blocks(&[(0, 4), (8, 12)]);
        assert_eq!(decode_blocks(&token).unwrap(), Some(vec![(0, 4), (8, 12)]));
        assert_eq!(decode_blocks("[\"5\"]").unwrap(), None);
        assert!(decode_blocks("{\"blocks\":7}").is_err());
    }
}
