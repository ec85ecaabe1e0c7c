//! Identifier quoting and the deterministic names of pgshift's shadow objects.
//!
//! Every identifier pgshift puts into SQL goes through [`quote`]; every object
//! it creates starts with [`PREFIX`], so leftovers are easy to find and tests
//! can assert there are none.

/// Prefix of every object pgshift creates in user schemas.
pub const PREFIX: &str = "pgshift_";

/// The schema that holds pgshift's state and trigger functions.
pub const STATE_SCHEMA: &str = "pgshift";

/// Postgres truncates identifiers to 63 bytes (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;

/// `"name"`, with embedded quotes doubled. Always quoted: never trust case folding.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

/// A SQL string literal, for the rare places a value cannot be a bind
/// parameter (DDL takes no parameters).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `pgshift_<kind>_<base>`, shortened with a hash when it would pass 63 bytes.
pub fn shadow(kind: &str, base: &str) -> String {
    bounded(&format!("{PREFIX}{kind}_{base}"))
}

/// The identifier Postgres means: unquoted names fold to lower case, quoted
/// ones are exact.
pub fn fold(ident: &sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// `name`, or `schema.name` outside `public`: how messages name a relation.
pub fn display(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

/// Shortens a name to fit 63 bytes, keeping it unique with a short hash.
pub fn bounded(name: &str) -> String {
    if name.len() <= MAX_IDENT {
        return name.to_string();
    }
    let hash = hex8(name);
    let mut cut = MAX_IDENT - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &name[..cut])
}

/// First 8 hex digits of the SHA-256 of `text`.
pub fn hex8(text: &str) -> String {
    crate::migration::checksum(text)[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote("id"), "\"id\"");
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("public", "Scripts"), "\"public\".\"Scripts\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn long_shadow_names_fit_and_stay_distinct() {
        let a = shadow("new", &"a".repeat(60));
        let b = shadow("new", &format!("{}b", "a".repeat(59)));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert!(a.starts_with("pgshift_new_"));
        assert_eq!(shadow("new", "id"), "pgshift_new_id");
    }

    #[test]
    fn bounded_respects_utf8_boundaries() {
        let name = "é".repeat(40);
        let b = bounded(&name);
        assert!(b.len() <= 63);
    }
}
