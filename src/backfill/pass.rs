//! The two passes over a large key range (`--two-pass-above`): even keys
//! first, then the rest, so the second pass's new row versions fit on the
//! pages the first pruned.

use super::settings::Settings;
use crate::plan::{BackfillShape, TablePlan};

/// Which pass over its key range a part is in, as checkpointed.
///
/// A backfill update on a full page puts the new version on another page:
/// a lock record, a new entry in every index. In two passes, the first
/// moves the rows with even keys away; once their old versions are
/// prunable, the second pass's new versions fit in their place, HOT. The
/// second pass is the full one (rows already copied are skipped), so a
/// resume in it never needs to know what the first did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// The first of two passes: even keys only.
    EvenKeys,
    /// The second of two passes: the whole range, even keys already done.
    Rest,
    /// The only pass.
    Full,
}

impl Pass {
    pub(super) fn from_db(pass: i16) -> Pass {
        match pass {
            0 => Pass::EvenKeys,
            2 => Pass::Rest,
            _ => Pass::Full,
        }
    }

    pub(super) fn to_db(self) -> i16 {
        match self {
            Pass::EvenKeys => 0,
            Pass::Full => 1,
            Pass::Rest => 2,
        }
    }

    /// The rows `scanned` rows of this pass count for: each of two passes
    /// counts half, so progress reaches the range's size once, at the end
    /// of the second.
    pub(super) fn counted(self, scanned: i64) -> i64 {
        match self {
            Pass::Full => scanned,
            Pass::EvenKeys => scanned / 2,
            Pass::Rest => scanned - scanned / 2,
        }
    }
}

/// Whether a key range of `rows` rows of `t` starts with the even-key pass
/// (see `--two-pass-above` and [`BackfillShape::two_passes`]).
pub(super) fn first_pass(t: &TablePlan, rows: i64, settings: &Settings) -> Pass {
    let shape = BackfillShape {
        workers: 1,
        two_pass_above: settings.two_pass_above,
    };
    if shape.two_passes(&t.key, rows) {
        Pass::EvenKeys
    } else {
        Pass::Full
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::settings::tests::adaptive;

    #[test]
    fn only_large_ranges_with_one_integer_key_go_in_two_passes() {
        let catalog = crate::plan::tests::incident();
        let p = crate::plan::tests::plan(&catalog, &[(1, "id")]);
        let mut t = p.tables[0].clone();
        assert_eq!(t.key.len(), 1, "{:?}", t.key);
        let settings = Settings {
            two_pass_above: 1_000,
            ..adaptive()
        };
        for ty in ["smallint", "integer", "bigint"] {
            t.key[0].type_name = ty.into();
            assert_eq!(first_pass(&t, 1_000, &settings), Pass::EvenKeys, "{ty}");
            assert_eq!(first_pass(&t, 999, &settings), Pass::Full, "{ty}");
        }
        let never = Settings {
            two_pass_above: 0,
            ..adaptive()
        };
        assert_eq!(first_pass(&t, i64::MAX, &never), Pass::Full);
        // No parity to split on.
        t.key[0].type_name = "uuid".into();
        assert_eq!(first_pass(&t, 1_000_000, &settings), Pass::Full);
        t.key[0].type_name = "integer".into();
        t.key.push(t.key[0].clone());
        assert_eq!(first_pass(&t, 1_000_000, &settings), Pass::Full);
    }

    #[test]
    fn the_pass_survives_the_checkpoint_table() {
        for pass in [Pass::EvenKeys, Pass::Rest, Pass::Full] {
            assert_eq!(Pass::from_db(pass.to_db()), pass);
        }
        // Rows written before passes existed default to 1: the full pass.
        assert_eq!(Pass::from_db(1), Pass::Full);
    }
}
