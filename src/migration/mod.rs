//! Reading migration files: split into statements (with their lines), parse
//! each, and classify it into what the user asked for ([`Intent`]).

mod split;

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
        let parsed =
            Parser::parse_sql(&PostgreSqlDialect {}, &stmt.text).map_err(|e| Error::Parse {
                file: display.clone(),
                line: stmt.line,
                message: format!("could not parse this statement: {e}"),
            })?;
        for statement in parsed {
            let found = classify(&statement).map_err(|message| Error::Parse {
                file: display.clone(),
                line: stmt.line,
                message,
            })?;
            out.extend(found.into_iter().map(|value| Located {
                line: stmt.line,
                value,
            }));
        }
    }
    Ok(out)
}

fn classify(statement: &Statement) -> std::result::Result<Vec<Intent>, String> {
    let Statement::AlterTable(alter) = statement else {
        return Err(format!(
            "unsupported statement `{}`: pgshift plans `ALTER TABLE … ALTER COLUMN … TYPE bigint` online",
            first_words(&statement.to_string())
        ));
    };
    let table = table_name(&alter.name)?;
    let mut intents = Vec::new();
    for op in &alter.operations {
        match op {
            AlterTableOperation::AlterColumn {
                column_name,
                op:
                    AlterColumnOperation::SetDataType {
                        data_type, using, ..
                    },
            } => {
                if !matches!(data_type, DataType::BigInt(None) | DataType::Int8(None)) {
                    return Err(format!(
                        "changing {table}.{} to {data_type} rewrites the table under an exclusive lock; \
                         pgshift converts integer columns to bigint online",
                        crate::names::fold(column_name)
                    ));
                }
                if using.is_some() {
                    return Err(format!(
                        "`USING` on {table}.{} is not supported: the online conversion copies the value as is",
                        crate::names::fold(column_name)
                    ));
                }
                intents.push(Intent::WidenToBigint {
                    table: table.clone(),
                    column: crate::names::fold(column_name),
                });
            }
            other => {
                return Err(format!(
                    "unsupported operation `{}` on {table}: pgshift plans `ALTER COLUMN … TYPE bigint` online",
                    first_words(&other.to_string())
                ))
            }
        }
    }
    Ok(intents)
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
    fn other_types_and_statements_are_refused_with_their_line() {
        let err = intents(&file("\n\nALTER TABLE t ALTER COLUMN c TYPE text;")).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::ExitCode::InputError);
        let msg = err.to_string();
        assert!(msg.starts_with("m.sql:3:"), "{msg}");
        assert!(msg.contains("rewrites the table"), "{msg}");

        let msg = intents(&file("SELECT 1;\nDROP TABLE x;"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("m.sql:1:") && msg.contains("unsupported statement"),
            "{msg}"
        );
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
