//! Token-level edits of SQL text that Postgres generated (index and
//! constraint definitions): rename column references and leave every other
//! byte as it was. Working on tokens, not on a parsed AST, means a definition
//! sqlparser cannot parse (operator classes, new syntax) is still handled,
//! and string literals keep their exact escaping.

use std::collections::HashMap;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::names;

/// `GRANT` from a catalog privilege entry (`PRIVILEGE grantee [WITH GRANT
/// OPTION]`, as the catalog queries write them) on `table`, or on one of its
/// columns.
pub fn grant(entry: &str, column: Option<&str>, table: &str) -> String {
    let (privilege, grantee) = entry.split_once(' ').unwrap_or((entry, "PUBLIC"));
    match column {
        Some(c) => format!(
            "GRANT {privilege} ({}) ON {table} TO {grantee}",
            crate::names::quote(c)
        ),
        None => format!("GRANT {privilege} ON {table} TO {grantee}"),
    }
}

/// A token and the byte range of its source text.
#[derive(Debug, Clone)]
pub struct Spanned {
    pub token: Token,
    pub start: usize,
    pub end: usize,
}

/// Tokenizes `sql` and attaches byte offsets (tokens are contiguous: whitespace is a token).
pub fn tokenize(sql: &str) -> Result<Vec<Spanned>, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> usize {
        let Some(&start) = line_starts.get((line as usize).saturating_sub(1)) else {
            return sql.len();
        };
        sql[start..]
            .char_indices()
            .nth((column as usize).saturating_sub(1))
            .map(|(i, _)| start + i)
            .unwrap_or(sql.len())
    };
    let starts: Vec<usize> = tokens
        .iter()
        .map(|t| match t.token {
            Token::EOF => sql.len(),
            _ => offset(t.span.start.line, t.span.start.column),
        })
        .collect();
    Ok(tokens
        .into_iter()
        .enumerate()
        .filter(|(_, t)| t.token != Token::EOF)
        .map(|(i, t)| Spanned {
            token: t.token,
            start: starts[i],
            end: starts.get(i + 1).copied().unwrap_or(sql.len()),
        })
        .collect())
}

/// The identifier a word token denotes (unquoted words fold to lower case).
fn identifier(token: &Token) -> Option<String> {
    match token {
        Token::Word(w) if w.quote_style == Some('"') => Some(w.value.clone()),
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_lowercase()),
        _ => None,
    }
}

fn is_keyword(token: &Token, keyword: Keyword) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.keyword == keyword)
}

/// Renames column references in `sql[from..]` per `renames`. A word counts as
/// a column reference unless it is qualified (`x.col`), a qualifier
/// (`col.x`), a cast target (`::col`) or a function name (`col(`).
/// `segments` can switch the mapping: see [`rename_in_foreign_key`].
pub fn rename_columns(
    sql: &str,
    from: usize,
    renames: &HashMap<String, String>,
) -> Result<String, String> {
    let tokens = tokenize(sql)?;
    Ok(rewrite(sql, &tokens, |i, _| {
        if tokens[i].start < from {
            None
        } else {
            renames.get(&identifier(&tokens[i].token)?)
        }
    }))
}

/// Rewrites a `pg_get_constraintdef` of a foreign key: `child` renames apply to
/// the referencing columns (and `ON DELETE SET NULL (…)` lists), `parent`
/// renames to the referenced column list after `REFERENCES table`.
pub fn rename_in_foreign_key(
    def: &str,
    child: &HashMap<String, String>,
    parent: &HashMap<String, String>,
) -> Result<String, String> {
    let tokens = tokenize(def)?;
    // Find the parenthesised column list right after REFERENCES <name>.
    let mut parent_range = None;
    if let Some(r) = tokens
        .iter()
        .position(|t| is_keyword(&t.token, Keyword::REFERENCES))
    {
        if let Some(open) = (r..tokens.len()).find(|&i| tokens[i].token == Token::LParen) {
            let close = (open..tokens.len())
                .find(|&i| tokens[i].token == Token::RParen)
                .unwrap_or(tokens.len());
            parent_range = Some(open..close);
        }
    }
    let refs = tokens
        .iter()
        .position(|t| is_keyword(&t.token, Keyword::REFERENCES));
    Ok(rewrite(def, &tokens, |i, _| {
        let ident = identifier(&tokens[i].token)?;
        match (&parent_range, refs) {
            (Some(range), _) if range.contains(&i) => parent.get(&ident),
            // The referenced table's name sits between REFERENCES and the list.
            (Some(range), Some(r)) if i > r && i < range.start => None,
            _ => child.get(&ident),
        }
    }))
}

fn rewrite<'a>(
    sql: &str,
    tokens: &[Spanned],
    mut lookup: impl FnMut(usize, &Spanned) -> Option<&'a String>,
) -> String {
    let significant = |i: usize, step: isize| -> Option<&Token> {
        let mut j = i as isize + step;
        while j >= 0 && (j as usize) < tokens.len() {
            match &tokens[j as usize].token {
                Token::Whitespace(_) => j += step,
                t => return Some(t),
            }
        }
        None
    };
    let mut out = String::with_capacity(sql.len() + 32);
    for (i, t) in tokens.iter().enumerate() {
        let text = &sql[t.start..t.end];
        let replace = matches!(t.token, Token::Word(_))
            && !matches!(significant(i, -1), Some(Token::Period | Token::DoubleColon))
            && !matches!(significant(i, 1), Some(Token::Period | Token::LParen));
        match replace.then(|| lookup(i, t)).flatten() {
            Some(new) => out.push_str(&names::quote(new)),
            None => out.push_str(text),
        }
    }
    out
}

/// Byte offset of the first `(` after the `USING <method>` of an index definition.
pub fn index_columns_start(def: &str) -> Option<usize> {
    let tokens = tokenize(def).ok()?;
    let using = tokens
        .iter()
        .position(|t| is_keyword(&t.token, Keyword::USING))?;
    tokens[using..]
        .iter()
        .find(|t| t.token == Token::LParen)
        .map(|t| t.start)
}

/// Whether `text` mentions `word` as a whole identifier (case-insensitive
/// unless quoted), e.g. a column name in a trigger function's source.
pub fn mentions_identifier(text: &str, word: &str) -> bool {
    match tokenize(text) {
        Ok(tokens) => tokens
            .iter()
            .any(|t| identifier(&t.token).is_some_and(|i| i == word)),
        // Unparseable source (another language): fall back to a word search.
        Err(_) => text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w.eq_ignore_ascii_case(word)),
    }
}

/// `CREATE POLICY` of `p` on `table`.
pub fn create_policy(p: &crate::catalog::Policy, table: &str) -> String {
    let roles: Vec<String> = p
        .roles
        .iter()
        .map(|r| {
            if r == "public" {
                "PUBLIC".to_string()
            } else {
                crate::names::quote(r)
            }
        })
        .collect();
    let mut sql = format!(
        "CREATE POLICY {} ON {table} AS {} FOR {} TO {}",
        crate::names::quote(&p.name),
        p.kind,
        p.command,
        roles.join(", ")
    );
    if let Some(using) = &p.using {
        sql.push_str(&format!(" USING ({using})"));
    }
    if let Some(check) = &p.check {
        sql.push_str(&format!(" WITH CHECK ({check})"));
    }
    sql
}

/// `CREATE INDEX …` in `tablespace` when the original index had one
/// (`pg_get_indexdef` leaves it out).
pub fn in_tablespace(sql: String, tablespace: Option<&str>) -> Option<String> {
    match tablespace {
        Some(ts) => index_in_tablespace(&sql, ts),
        None => Some(sql),
    }
}

/// `CREATE INDEX …` with `TABLESPACE ts`, which goes before the predicate
/// of a partial index (its first `WHERE` outside parentheses).
pub fn index_in_tablespace(sql: &str, tablespace: &str) -> Option<String> {
    let tokens = tokenize(sql).ok()?;
    let mut depth = 0i32;
    let mut at = sql.len();
    for t in &tokens {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w)
                if depth == 0 && w.keyword == Keyword::WHERE && w.quote_style.is_none() =>
            {
                at = t.start;
                break;
            }
            _ => {}
        }
    }
    let (head, tail) = sql.split_at(at);
    Some(format!(
        "{} TABLESPACE {}{}{tail}",
        head.trim_end(),
        crate::names::quote(tablespace),
        if tail.is_empty() { "" } else { " " }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_goes_to_its_tablespace_before_its_predicate() {
        assert_eq!(
            index_in_tablespace("CREATE INDEX i ON t USING btree (a) INCLUDE (b) WITH (fillfactor='70') WHERE (a > (SELECT 1 WHERE true))", "fast").unwrap(),
            "CREATE INDEX i ON t USING btree (a) INCLUDE (b) WITH (fillfactor='70') TABLESPACE \"fast\" WHERE (a > (SELECT 1 WHERE true))"
        );
        assert_eq!(
            index_in_tablespace(
                "CREATE INDEX \"where\" ON t USING btree (\"where\")",
                "fast"
            )
            .unwrap(),
            "CREATE INDEX \"where\" ON t USING btree (\"where\") TABLESPACE \"fast\""
        );
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn renames_index_columns_expressions_and_predicates_only() {
        let def = "CREATE UNIQUE INDEX id ON public.id USING btree (id DESC NULLS LAST, lower(name), abs(id)) INCLUDE (id) WHERE ((id > 0) AND (note <> 'id''s'::text))";
        let from = index_columns_start(def).unwrap();
        let got = rename_columns(def, from, &map(&[("id", "pgshift_new_id")])).unwrap();
        assert_eq!(
            got,
            "CREATE UNIQUE INDEX id ON public.id USING btree (\"pgshift_new_id\" DESC NULLS LAST, lower(name), abs(\"pgshift_new_id\")) INCLUDE (\"pgshift_new_id\") WHERE ((\"pgshift_new_id\" > 0) AND (note <> 'id''s'::text))"
        );
    }

    #[test]
    fn quoted_identifiers_match_exactly() {
        let def = "CREATE INDEX x ON s.t USING btree (\"Key\", key)";
        let from = index_columns_start(def).unwrap();
        let got = rename_columns(def, from, &map(&[("Key", "pgshift_new_Key")])).unwrap();
        assert_eq!(
            got,
            "CREATE INDEX x ON s.t USING btree (\"pgshift_new_Key\", key)"
        );
    }

    #[test]
    fn foreign_keys_rename_each_side_with_its_own_mapping() {
        let def =
            "FOREIGN KEY (script_id, id) REFERENCES id(id, script_id) ON DELETE CASCADE DEFERRABLE";
        let got = rename_in_foreign_key(
            def,
            &map(&[("script_id", "pgshift_new_script_id")]),
            &map(&[("id", "pgshift_new_id")]),
        )
        .unwrap();
        assert_eq!(
            got,
            "FOREIGN KEY (\"pgshift_new_script_id\", id) REFERENCES id(\"pgshift_new_id\", script_id) ON DELETE CASCADE DEFERRABLE"
        );
    }

    #[test]
    fn finds_identifiers_in_function_sources() {
        assert!(mentions_identifier(
            "BEGIN NEW.script_id := 1; RETURN NEW; END",
            "script_id"
        ));
        assert!(!mentions_identifier(
            "BEGIN NEW.script_ids := 1; END",
            "script_id"
        ));
        assert!(!mentions_identifier("BEGIN RAISE NOTICE 'id'; END", "id"));
    }
}
