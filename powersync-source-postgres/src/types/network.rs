//! `inet`, `cidr`, `macaddr`, `macaddr8` from their binary forms, printed as PostgreSQL prints
//! them.

use std::fmt::Write;

use powersync_source_core::Value;

use super::Res;

const PGSQL_AF_INET: u8 = 2;
const PGSQL_AF_INET6: u8 = 3;

/// Binary `inet`/`cidr`: family, prefix bits, is-cidr flag, address length, address bytes.
/// `inet` omits the prefix of a host address (`/32`, `/128`), `cidr` always shows it.
pub(crate) fn inet_binary(b: &[u8], cidr: bool) -> Res<Value> {
    let [family, bits, _is_cidr, nb, addr @ ..] = b else {
        return Err(format!("inet needs at least 4 bytes, got {}", b.len()));
    };
    let max_bits = match (*family, *nb) {
        (PGSQL_AF_INET, 4) => 32,
        (PGSQL_AF_INET6, 16) => 128,
        _ => {
            return Err(format!(
                "invalid inet family {family} with {nb} address bytes"
            ))
        }
    };
    if addr.len() != *nb as usize {
        return Err(format!(
            "inet with {nb} address bytes has {} bytes",
            addr.len()
        ));
    }
    if *bits > max_bits {
        return Err(format!("invalid inet prefix length {bits}"));
    }
    let mut out = String::with_capacity(if max_bits == 32 { 18 } else { 43 });
    if max_bits == 32 {
        let _ = write!(out, "{}.{}.{}.{}", addr[0], addr[1], addr[2], addr[3]);
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(addr);
        write_ipv6(&mut out, &a);
    }
    if cidr || *bits != max_bits {
        let _ = write!(out, "/{bits}");
    }
    Ok(Value::Text(out))
}

/// An IPv6 address as PostgreSQL's (BIND's) `inet_ntop` prints it: lowercase hex groups
/// without leading zeros, the first longest run of two or more zero groups as `::`, and an
/// embedded IPv4 address in dotted form for `::a.b.c.d` and `::ffff:a.b.c.d`.
fn write_ipv6(out: &mut String, a: &[u8; 16]) {
    let words: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([a[2 * i], a[2 * i + 1]]));
    // Longest run of zero words (first one on ties), at least 2 long.
    let (mut best_base, mut best_len) = (usize::MAX, 0);
    let (mut cur_base, mut cur_len) = (usize::MAX, 0);
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            if cur_base == usize::MAX {
                (cur_base, cur_len) = (i, 1);
            } else {
                cur_len += 1;
            }
        } else if cur_base != usize::MAX {
            if cur_len > best_len {
                (best_base, best_len) = (cur_base, cur_len);
            }
            cur_base = usize::MAX;
        }
    }
    if cur_base != usize::MAX && cur_len > best_len {
        (best_base, best_len) = (cur_base, cur_len);
    }
    if best_len < 2 {
        best_base = usize::MAX;
    }
    let in_best = |i: usize| best_base != usize::MAX && i >= best_base && i < best_base + best_len;
    for i in 0..8 {
        if in_best(i) {
            if i == best_base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            break;
        }
        let _ = write!(out, "{:x}", words[i]);
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(':');
    }
}

/// Binary `macaddr` (6 bytes) / `macaddr8` (8 bytes) → `08:00:2b:01:02:03`.
pub(crate) fn macaddr_binary(b: &[u8], len: usize) -> Res<Value> {
    if b.len() != len {
        return Err(format!("expected {len} bytes, got {}", b.len()));
    }
    let mut out = String::with_capacity(len * 3);
    for (i, byte) in b.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02x}");
    }
    Ok(Value::Text(out))
}
