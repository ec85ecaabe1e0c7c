//! The clauses of `ALTER COLUMN … TYPE` read from the statement's own text:
//! the type, `COLLATE` and `USING` exactly as the user wrote them.
//!
//! Why not from sqlparser's AST: it rejects `TYPE t COLLATE c` (a valid
//! Postgres form), and printing its AST back would respell the `USING`
//! expression. Postgres itself resolves these texts when pgshift rehearses
//! the change (see `catalog::rehearse`), so the texts must be the user's.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

use crate::sqltext::{self, Spanned};

/// One `ALTER [COLUMN] c [SET DATA] TYPE …` clause of a statement, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeClause {
    /// The type as written, e.g. `varchar(20)` or `public.mood`.
    pub type_text: String,
    /// The collation as written (`"C"`), when given.
    pub collate: Option<String>,
    /// The `USING` expression as written, when given.
    pub using: Option<String>,
}

/// The statement with every `COLLATE` of a type clause taken out (so that
/// sqlparser takes it), and the type clauses in the order they appear.
pub fn type_clauses(sql: &str) -> Result<(String, Vec<TypeClause>), String> {
    let tokens = sqltext::tokenize(sql)?;
    let is = |t: &Spanned, k: Keyword| matches!(&t.token, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    let mut stripped = String::new();
    let mut clauses = Vec::new();
    let mut copied_to = 0;
    let mut depth = 0i32;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth != 0 || !is(t, Keyword::TYPE) {
            i += 1;
            continue;
        }
        // A type clause runs to the next top-level comma or the end; inside
        // it, COLLATE and USING start their parts.
        let mut end = i + 1;
        let mut d = 0i32;
        let (mut collate_at, mut using_at) = (None, None);
        while end < tokens.len() {
            match tokens[end].token {
                Token::LParen => d += 1,
                Token::RParen => d -= 1,
                Token::Comma if d == 0 => break,
                _ => {}
            }
            if d == 0 && using_at.is_none() {
                if is(&tokens[end], Keyword::COLLATE) && collate_at.is_none() {
                    collate_at = Some(end);
                } else if is(&tokens[end], Keyword::USING) {
                    using_at = Some(end);
                }
            }
            end += 1;
        }
        let text = |from: usize, to: usize| -> String {
            if from >= to {
                return String::new();
            }
            sql[tokens[from].start..tokens[to - 1].end]
                .trim()
                .to_string()
        };
        let type_end = collate_at.or(using_at).unwrap_or(end);
        let type_text = text(i + 1, type_end);
        if type_text.is_empty() {
            return Err("TYPE names no type".into());
        }
        let collate = collate_at.map(|c| text(c + 1, using_at.unwrap_or(end)));
        if collate.as_deref() == Some("") {
            return Err("COLLATE names no collation".into());
        }
        let using = using_at.map(|u| text(u + 1, end));
        if using.as_deref() == Some("") {
            return Err("USING gives no expression".into());
        }
        if let Some(c) = collate_at {
            stripped.push_str(&sql[copied_to..tokens[c].start]);
            copied_to = tokens[using_at.unwrap_or(end) - 1].end;
            stripped.push(' ');
        }
        clauses.push(TypeClause {
            type_text,
            collate,
            using,
        });
        i = end;
    }
    stripped.push_str(&sql[copied_to..]);
    Ok((stripped, clauses))
}

/// A `-- pgshift:down [column] USING <expr>` annotation: how rollback after
/// cutover converts `column`'s values back (the only column of the
/// statement when none is named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownAnnotation {
    pub column: Option<String>,
    pub using: String,
}

/// The down annotations among a statement's comments.
pub fn down_annotations(comments: &[String]) -> Result<Vec<DownAnnotation>, String> {
    let mut out = Vec::new();
    for c in comments {
        let Some(rest) = c.trim().strip_prefix("pgshift:down") else {
            continue;
        };
        let rest = rest.trim();
        let upper = rest.to_ascii_uppercase();
        let (column, using) = if upper.starts_with("USING ") {
            (None, rest[6..].trim())
        } else {
            match upper.find(" USING ") {
                Some(at) => {
                    let column = rest[..at].trim();
                    let tokens = sqltext::tokenize(column)?;
                    let ident = match tokens.as_slice() {
                        [Spanned {
                            token: Token::Word(w),
                            ..
                        }] if w.quote_style == Some('"') => w.value.clone(),
                        [Spanned {
                            token: Token::Word(w),
                            ..
                        }] => w.value.to_lowercase(),
                        _ => {
                            return Err(format!(
                                "`pgshift:down {rest}`: expected a column name before USING"
                            ))
                        }
                    };
                    (Some(ident), rest[at + 7..].trim())
                }
                None => {
                    return Err(format!(
                    "`pgshift:down {rest}`: expected `-- pgshift:down [column] USING <expression>`"
                ))
                }
            }
        };
        if using.is_empty() {
            return Err("`pgshift:down … USING` gives no expression".into());
        }
        out.push(DownAnnotation {
            column,
            using: using.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(t: &str, c: Option<&str>, u: Option<&str>) -> TypeClause {
        TypeClause {
            type_text: t.into(),
            collate: c.map(str::to_string),
            using: u.map(str::to_string),
        }
    }

    #[test]
    fn reads_type_collate_and_using_as_written() {
        let (stripped, got) = type_clauses(
            "ALTER TABLE t ALTER COLUMN a TYPE numeric(12, 2), ALTER b SET DATA TYPE text COLLATE \"C\" USING lower(b::text), \
             ALTER COLUMN c TYPE jsonb USING coalesce(c, '{}')::jsonb",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                clause("numeric(12, 2)", None, None),
                clause("text", Some("\"C\""), Some("lower(b::text)")),
                clause("jsonb", None, Some("coalesce(c, '{}')::jsonb")),
            ]
        );
        assert!(!stripped.contains("COLLATE"), "{stripped}");
        assert!(
            stripped.contains("TYPE text  USING lower(b::text)"),
            "{stripped}"
        );
    }

    #[test]
    fn a_collate_inside_using_stays() {
        let (stripped, got) =
            type_clauses("ALTER TABLE t ALTER COLUMN a TYPE varchar(20) USING a COLLATE \"C\"")
                .unwrap();
        assert_eq!(
            got,
            vec![clause("varchar(20)", None, Some("a COLLATE \"C\""))]
        );
        assert!(stripped.contains("COLLATE"));
    }

    #[test]
    fn down_annotations_name_their_column_or_none() {
        let got = down_annotations(&[
            " pgshift:down USING payload::text".into(),
            "pgshift:down \"Odd\" using \"Odd\"::int".into(),
            "an ordinary comment".into(),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                DownAnnotation {
                    column: None,
                    using: "payload::text".into()
                },
                DownAnnotation {
                    column: Some("Odd".into()),
                    using: "\"Odd\"::int".into()
                },
            ]
        );
        assert!(down_annotations(&["pgshift:down payload".into()]).is_err());
    }
}
