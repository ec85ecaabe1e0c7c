//! Splitting a SQL file into statements with the line each starts on.
//!
//! Uses sqlparser's tokenizer, not its parser: the tokenizer knows
//! Postgres's strings, dollar quotes and comments, and a statement the parser
//! rejects (it lags behind Postgres) still splits correctly, so it can be
//! reported by line or run verbatim.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

/// One statement's source text (without the `;`) and its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatement {
    pub line: u64,
    pub text: String,
    /// The text of the line comments (`--`) from the end of the statement
    /// before to the end of this one: where annotations such as
    /// `-- pgshift:down USING …` are read.
    pub comments: Vec<String>,
}

/// Splits `sql` at top-level semicolons. Errors carry (line, message).
pub fn split_statements(sql: &str) -> Result<Vec<RawStatement>, (u64, String)> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| (e.location.line.max(1), e.message))?;
    let line_starts = line_starts(sql);
    let offset = |line: u64, column: u64| -> usize {
        let start = line_starts[(line as usize).saturating_sub(1).min(line_starts.len() - 1)];
        // Columns count characters, not bytes.
        sql[start..]
            .char_indices()
            .nth((column as usize).saturating_sub(1))
            .map(|(i, _)| start + i)
            .unwrap_or(sql.len())
    };

    let mut out = Vec::new();
    let mut start: Option<(u64, usize)> = None;
    let mut comments = Vec::new();
    for t in &tokens {
        match &t.token {
            Token::SemiColon => {
                if let Some((line, from)) = start.take() {
                    let to = offset(t.span.start.line, t.span.start.column);
                    out.push(RawStatement {
                        line,
                        text: sql[from..to].trim_end().to_string(),
                        comments: std::mem::take(&mut comments),
                    });
                }
            }
            Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) => {
                comments.push(comment.trim_end().to_string());
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => {
                if start.is_none() {
                    start = Some((
                        t.span.start.line,
                        offset(t.span.start.line, t.span.start.column),
                    ));
                }
            }
        }
    }
    if let Some((line, from)) = start {
        out.push(RawStatement {
            line,
            text: sql[from..].trim_end().to_string(),
            comments,
        });
    }
    Ok(out)
}

fn line_starts(sql: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_lines_and_keeps_dollar_quotes_whole() {
        let sql = "-- header\nSELECT 1;\n\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n  DROP INDEX CONCURRENTLY ix  ;\nSELECT 'a;b'";
        let got = split_statements(sql).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            RawStatement {
                line: 2,
                text: "SELECT 1".into(),
                comments: vec![" header".into()],
            }
        );
        assert_eq!(got[1].line, 4);
        assert!(got[1].text.ends_with("LANGUAGE sql"));
        assert_eq!(
            got[2],
            RawStatement {
                line: 5,
                text: "DROP INDEX CONCURRENTLY ix".into(),
                comments: vec![],
            }
        );
        assert_eq!(
            got[3],
            RawStatement {
                line: 6,
                text: "SELECT 'a;b'".into(),
                comments: vec![],
            }
        );
    }

    #[test]
    fn multibyte_text_before_a_statement_keeps_offsets_right() {
        let got = split_statements("SELECT 'é';SELECT 2;").unwrap();
        assert_eq!(got[1].text, "SELECT 2");
    }

    #[test]
    fn unterminated_string_reports_its_line() {
        let err = split_statements("SELECT 1;\nSELECT 'oops").unwrap_err();
        assert_eq!(err.0, 2);
    }
}
