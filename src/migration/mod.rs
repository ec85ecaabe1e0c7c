//! Reading migration files: split into statements (with their lines), parse
//! each, and classify it into what the user asked for ([`Intent`]).

mod split;
mod type_change;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, DataType, Ident, ObjectName, ObjectNamePart,
    Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::error::{Error, Result};
pub use split::{split_statements, RawStatement};
pub use type_change::{down_annotations, type_clauses, DownAnnotation, TypeClause};

/// A migration file, read and checksummed.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    /// The file stem: how commands after `apply` name the migration.
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    /// SHA-256 of the file's bytes, hex; a started migration refuses a changed file.
    pub checksum: String,
}

impl MigrationFile {
    pub fn read(path: &Path) -> Result<MigrationFile> {
        if !path.exists() {
            return Err(Error::MigrationNotFound {
                path: path.to_path_buf(),
            });
        }
        let sql = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage(format!("{} has no file name", path.display())))?;
        Ok(MigrationFile {
            name,
            path: path.to_path_buf(),
            checksum: checksum(&sql),
            sql,
        })
    }
}

pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A table or column name as written, with Postgres's case folding applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// What one statement of a migration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// `ALTER TABLE t ALTER COLUMN c [SET DATA] TYPE bigint|int8`.
    WidenToBigint { table: TableName, column: String },
    /// Any other `ALTER TABLE t ALTER COLUMN c [SET DATA] TYPE t [COLLATE …]
    /// [USING …]`: Postgres resolves it when pgshift rehearses it.
    ChangeType {
        table: TableName,
        column: String,
        change: TypeChange,
    },
}

/// A column type change as the migration writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TypeChange {
    /// The type as written, e.g. `varchar(20)`.
    pub type_text: String,
    /// `COLLATE` as written.
    pub collate: Option<String>,
    /// `USING` as written: how each row's value converts.
    pub using: Option<String>,
    /// `-- pgshift:down USING …`: how a value converts back, for a rollback
    /// after cutover.
    pub down: Option<String>,
}

/// An intent with where it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub line: u64,
    pub value: T,
}

/// Parses a migration into intents; anything pgshift cannot run online is an
/// error naming file and line.
pub fn intents(file: &MigrationFile) -> Result<Vec<Located<Intent>>> {
    let display = file.path.display().to_string();
    let statements = split_statements(&file.sql).map_err(|(line, message)| Error::Parse {
        file: display.clone(),
        line,
        message,
    })?;
    if statements.is_empty() {
        return Err(Error::Parse {
            file: display,
            line: 1,
            message: "the migration holds no SQL statement".into(),
        });
    }
    let mut out = Vec::new();
    for stmt in statements {
        let at_line = |message: String| Error::Parse {
            file: display.clone(),
            line: stmt.line,
            message,
        };
        let (text, clauses) = type_clauses(&stmt.text).map_err(&at_line)?;
        let downs = down_annotations(&stmt.comments).map_err(&at_line)?;
        let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &text)
            .map_err(|e| at_line(format!("could not parse this statement: {e}")))?;
        for statement in parsed {
            let found = classify(&statement, &clauses, &downs).map_err(&at_line)?;
            out.extend(found.into_iter().map(|value| Located {
                line: stmt.line,
                value,
            }));
        }
    }
    Ok(out)
}

fn classify(
    statement: &Statement,
    clauses: &[TypeClause],
    downs: &[DownAnnotation],
) -> std::result::Result<Vec<Intent>, String> {
    let Statement::AlterTable(alter) = statement else {
        return Err(format!(
            "unsupported statement `{}`: pgshift plans `ALTER TABLE … ALTER COLUMN … TYPE …` online",
            first_words(&statement.to_string())
        ));
    };
    let table = table_name(&alter.name)?;
    let mut intents = Vec::new();
    let mut clauses = clauses.iter();
    for op in &alter.operations {
        match op {
            AlterTableOperation::AlterColumn {
                column_name,
                op: AlterColumnOperation::SetDataType { data_type, .. },
            } => {
                let column = crate::names::fold(column_name);
                let clause = clauses
                    .next()
                    .ok_or_else(|| format!("could not read the TYPE clause of {table}.{column}"))?;
                let widening = matches!(data_type, DataType::BigInt(None) | DataType::Int8(None))
                    && clause.collate.is_none()
                    && clause.using.is_none();
                if widening {
                    intents.push(Intent::WidenToBigint {
                        table: table.clone(),
                        column,
                    });
                    continue;
                }
                intents.push(Intent::ChangeType {
                    table: table.clone(),
                    column,
                    change: TypeChange {
                        type_text: clause.type_text.clone(),
                        collate: clause.collate.clone(),
                        using: clause.using.clone(),
                        down: None,
                    },
                });
            }
            other => {
                return Err(format!(
                    "unsupported operation `{}` on {table}: pgshift plans `ALTER COLUMN … TYPE …` online",
                    first_words(&other.to_string())
                ))
            }
        }
    }
    attach_downs(&mut intents, downs)?;
    Ok(intents)
}

/// Gives each `-- pgshift:down` annotation to the type change it names (or
/// to the statement's only one).
fn attach_downs(
    intents: &mut [Intent],
    downs: &[DownAnnotation],
) -> std::result::Result<(), String> {
    for down in downs {
        let mut changes: Vec<&mut TypeChange> = intents
            .iter_mut()
            .filter_map(|i| match i {
                Intent::ChangeType { column, change, .. }
                    if down.column.as_ref().is_none_or(|c| c == column) =>
                {
                    Some(change)
                }
                _ => None,
            })
            .collect();
        match (changes.len(), &down.column) {
            (1, _) => changes[0].down = Some(down.using.clone()),
            (0, Some(c)) => {
                return Err(format!(
                    "`pgshift:down {c} USING …` names no column this statement changes the type of"
                ))
            }
            (0, None) => {
                return Err(
                    "`pgshift:down USING …` is on a statement with no type change to undo".into(),
                )
            }
            _ => {
                return Err(
                    "this statement changes several columns: name the column in `-- pgshift:down <column> USING …`"
                        .into(),
                )
            }
        }
    }
    Ok(())
}

fn table_name(name: &ObjectName) -> std::result::Result<TableName, String> {
    let parts: Vec<&Ident> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(i),
            ObjectNamePart::Function(_) => Err(format!("unsupported table name {name}")),
        })
        .collect::<std::result::Result<_, _>>()?;
    match parts.as_slice() {
        [t] => Ok(TableName {
            schema: None,
            name: crate::names::fold(t),
        }),
        [s, t] => Ok(TableName {
            schema: Some(crate::names::fold(s)),
            name: crate::names::fold(t),
        }),
        _ => Err(format!(
            "table name {name} has too many parts (use schema.table)"
        )),
    }
}

fn first_words(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(6).collect();
    let mut s = words.join(" ");
    if sql.split_whitespace().count() > 6 {
        s.push_str(" …");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sql: &str) -> MigrationFile {
        MigrationFile {
            name: "m".into(),
            path: PathBuf::from("m.sql"),
            checksum: checksum(sql),
            sql: sql.into(),
        }
    }

    fn widen(schema: Option<&str>, table: &str, column: &str) -> Intent {
        Intent::WidenToBigint {
            table: TableName {
                schema: schema.map(str::to_string),
                name: table.into(),
            },
            column: column.into(),
        }
    }

    #[test]
    fn recognises_every_spelling_of_the_widening() {
        let sql = "ALTER TABLE scripts ALTER COLUMN id TYPE bigint;\n\
                   alter table public.Script_Runs alter column Script_Id set data type int8;\n\
                   ALTER TABLE \"My Schema\".\"Odd\" ALTER \"Key\" TYPE BIGINT, ALTER COLUMN other TYPE int8;";
        let got: Vec<Intent> = intents(&file(sql))
            .unwrap()
            .into_iter()
            .map(|l| l.value)
            .collect();
        assert_eq!(
            got,
            vec![
                widen(None, "scripts", "id"),
                widen(Some("public"), "script_runs", "script_id"),
                widen(Some("My Schema"), "Odd", "Key"),
                widen(Some("My Schema"), "Odd", "other"),
            ]
        );
    }

    #[test]
    fn other_statements_are_refused_with_their_line() {
        let err = intents(&file("\n\nALTER TABLE t ADD COLUMN c text;")).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::ExitCode::InputError);
        let msg = err.to_string();
        assert!(msg.starts_with("m.sql:3:"), "{msg}");
        assert!(msg.contains("unsupported operation"), "{msg}");

        let msg = intents(&file("SELECT 1;\nDROP TABLE x;"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("m.sql:1:") && msg.contains("unsupported statement"),
            "{msg}"
        );
    }

    #[test]
    fn any_type_change_is_an_intent_with_its_clauses_and_down() {
        let sql = "ALTER TABLE scripts ALTER COLUMN name TYPE jsonb USING name::jsonb;\n\
                   -- pgshift:down USING started::timestamp\n\
                   ALTER TABLE runs ALTER started TYPE timestamptz;\n\
                   -- pgshift:down label USING label::text\n\
                   ALTER TABLE runs ALTER COLUMN id TYPE bigint, ALTER label TYPE text COLLATE \"C\";";
        let got: Vec<Intent> = intents(&file(sql))
            .unwrap()
            .into_iter()
            .map(|l| l.value)
            .collect();
        let change = |t: &str, c: Option<&str>, u: Option<&str>, d: Option<&str>| TypeChange {
            type_text: t.into(),
            collate: c.map(str::to_string),
            using: u.map(str::to_string),
            down: d.map(str::to_string),
        };
        let table = |n: &str| TableName {
            schema: None,
            name: n.into(),
        };
        assert_eq!(
            got,
            vec![
                Intent::ChangeType {
                    table: table("scripts"),
                    column: "name".into(),
                    change: change("jsonb", None, Some("name::jsonb"), None)
                },
                Intent::ChangeType {
                    table: table("runs"),
                    column: "started".into(),
                    change: change("timestamptz", None, None, Some("started::timestamp"))
                },
                widen(None, "runs", "id"),
                Intent::ChangeType {
                    table: table("runs"),
                    column: "label".into(),
                    change: change("text", Some("\"C\""), None, Some("label::text"))
                },
            ]
        );
    }

    #[test]
    fn a_down_annotation_that_fits_no_change_names_the_line() {
        let msg = intents(&file(
            "ALTER TABLE t ALTER a TYPE text;\n-- pgshift:down b USING b::int\nALTER TABLE t ALTER a TYPE int;",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.starts_with("m.sql:3:") && msg.contains("names no column"),
            "{msg}"
        );
        let msg = intents(&file(
            "-- pgshift:down USING a::int\nALTER TABLE t ALTER a TYPE text, ALTER b TYPE text;",
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("name the column"), "{msg}");
    }

    #[test]
    fn a_statement_that_does_not_parse_names_its_line() {
        let msg = intents(&file(
            "ALTER TABLE t ALTER COLUMN c TYPE bigint;\n-- note\nALTER TABLE t ALTR;",
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.starts_with("m.sql:3: could not parse"), "{msg}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let msg = intents(&file("-- nothing here\n")).unwrap_err().to_string();
        assert!(msg.contains("no SQL statement"), "{msg}");
    }
}
