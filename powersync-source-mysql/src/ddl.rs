//! Which tables a DDL statement from a binlog query event touches. A light tokenizer, not a
//! parser: it only needs the statement kind and the table names (quoted or not, qualified or
//! not), and says `Other` for anything it does not recognise.

/// A DDL statement's effect on tables (names as `(database or "", table)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ddl {
    Truncate(Vec<(String, String)>),
    Drop(Vec<(String, String)>),
    /// Pairs of (from, to).
    Rename(Vec<((String, String), (String, String))>),
    Create((String, String)),
    Alter((String, String)),
    Other,
}

/// Classifies `sql`.
pub(crate) fn classify(sql: &str) -> Ddl {
    let toks = tokens(sql);
    let kw = |i: usize| {
        toks.get(i)
            .map(|t| t.0.to_ascii_lowercase())
            .unwrap_or_default()
    };
    let mut i = 0;
    match kw(0).as_str() {
        "truncate" => {
            i = 1;
            if kw(i) == "table" {
                i += 1;
            }
            names(&toks, i, 1).map(Ddl::Truncate).unwrap_or(Ddl::Other)
        }
        "drop" => {
            i += 1;
            if kw(i) == "temporary" {
                return Ddl::Other;
            }
            if kw(i) != "table" {
                return Ddl::Other;
            }
            i += 1;
            if kw(i) == "if" && kw(i + 1) == "exists" {
                i += 2;
            }
            names(&toks, i, usize::MAX)
                .map(Ddl::Drop)
                .unwrap_or(Ddl::Other)
        }
        "rename" => {
            if kw(1) != "table" {
                return Ddl::Other;
            }
            i = 2;
            let mut pairs = Vec::new();
            loop {
                let Some((from, j)) = name(&toks, i) else {
                    return Ddl::Other;
                };
                if toks.get(j).map(|t| t.0.to_ascii_lowercase()) != Some("to".into()) {
                    return Ddl::Other;
                }
                let Some((to, k)) = name(&toks, j + 1) else {
                    return Ddl::Other;
                };
                pairs.push((from, to));
                if toks.get(k).map(|t| t.0.as_str()) == Some(",") {
                    i = k + 1;
                } else {
                    break;
                }
            }
            Ddl::Rename(pairs)
        }
        "create" | "alter" => {
            let create = kw(0) == "create";
            i = 1;
            while matches!(
                kw(i).as_str(),
                "or" | "replace" | "online" | "ignore" | "definer"
            ) {
                i += 1;
            }
            if kw(i) == "temporary" || kw(i) != "table" {
                return Ddl::Other;
            }
            i += 1;
            if kw(i) == "if" && kw(i + 1) == "not" && kw(i + 2) == "exists" {
                i += 3;
            } else if kw(i) == "if" && kw(i + 1) == "exists" {
                i += 2;
            }
            match name(&toks, i) {
                Some((n, _)) if create => Ddl::Create(n),
                Some((n, _)) => Ddl::Alter(n),
                None => Ddl::Other,
            }
        }
        _ => Ddl::Other,
    }
}

/// (text, quoted)
type Tok = (String, bool);

fn tokens(sql: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let b: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < b.len() && out.len() < 4096 {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            // Comments; MySQL's executable `/*!nnnnn … */` comments keep their content.
            if b.get(i + 2) == Some(&'!') {
                i += 3;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i += 2;
                while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
        } else if c == '*' && b.get(i + 1) == Some(&'/') {
            i += 2;
        } else if c == '#' || (c == '-' && b.get(i + 1) == Some(&'-')) {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '`' || c == '"' {
            let q = c;
            let mut s = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == q {
                    if b.get(i + 1) == Some(&q) {
                        s.push(q);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push((s, true));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut s = String::new();
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                s.push(b[i]);
                i += 1;
            }
            out.push((s, false));
        } else {
            out.push((c.to_string(), false));
            i += 1;
        }
    }
    out
}

fn name(toks: &[Tok], i: usize) -> Option<((String, String), usize)> {
    let first = toks.get(i)?;
    if !first.1 && !first.0.chars().next()?.is_alphanumeric() && !first.0.starts_with('_') {
        return None;
    }
    if toks.get(i + 1).map(|t| t.0.as_str()) == Some(".") {
        let second = toks.get(i + 2)?;
        Some(((first.0.clone(), second.0.clone()), i + 3))
    } else {
        Some(((String::new(), first.0.clone()), i + 1))
    }
}

fn names(toks: &[Tok], mut i: usize, max: usize) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    loop {
        let (n, j) = name(toks, i)?;
        out.push(n);
        if out.len() < max && toks.get(j).map(|t| t.0.as_str()) == Some(",") {
            i = j + 1;
        } else {
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(d: &str, t: &str) -> (String, String) {
        (d.into(), t.into())
    }

    #[test]
    fn classifies() {
        assert_eq!(
            classify("TRUNCATE TABLE `a`"),
            Ddl::Truncate(vec![n("", "a")])
        );
        assert_eq!(classify("truncate db.t"), Ddl::Truncate(vec![n("db", "t")]));
        assert_eq!(
            classify("DROP TABLE IF EXISTS `a`,`d`.`b` /* generated by server */"),
            Ddl::Drop(vec![n("", "a"), n("d", "b")])
        );
        assert_eq!(
            classify("RENAME TABLE a TO b, x.c TO y.d"),
            Ddl::Rename(vec![(n("", "a"), n("", "b")), (n("x", "c"), n("y", "d"))])
        );
        assert_eq!(
            classify("create table if not exists `t``q` (id int)"),
            Ddl::Create(n("", "t`q"))
        );
        assert_eq!(
            classify("ALTER TABLE test.conf ADD COLUMN x text"),
            Ddl::Alter(n("test", "conf"))
        );
        assert_eq!(classify("CREATE TEMPORARY TABLE t (a int)"), Ddl::Other);
        assert_eq!(classify("BEGIN"), Ddl::Other);
        assert_eq!(classify(""), Ddl::Other);
    }
}
