//! The customer lifecycle: lead → prospect → active → inactive → churned, with the changes a
//! business actually makes (requalifying a prospect, winning a churned customer back).

use crm_proto::core_v1::LifecycleStage;

/// Whether a customer may move from `from` to `to` (staying put is always allowed).
#[must_use]
pub fn allowed(from: LifecycleStage, to: LifecycleStage) -> bool {
    use LifecycleStage::{Active, Churned, Inactive, Lead, Prospect, Unspecified};
    from == to
        || matches!(
            (from, to),
            (Lead, Prospect | Active)
                | (Prospect, Lead | Active | Inactive)
                | (Active, Inactive | Churned)
                | (Inactive, Active | Churned)
                | (Churned, Active)
        ) && to != Unspecified
}

/// Stages a new customer may start in (imports may bring prospects and active customers).
#[must_use]
pub fn allowed_initially(stage: LifecycleStage) -> bool {
    matches!(
        stage,
        LifecycleStage::Lead | LifecycleStage::Prospect | LifecycleStage::Active
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleStage::{Active, Churned, Inactive, Lead, Prospect};

    #[test]
    fn the_transition_table() {
        let all = [Lead, Prospect, Active, Inactive, Churned];
        let allowed_pairs = [
            (Lead, Prospect),
            (Lead, Active),
            (Prospect, Lead),
            (Prospect, Active),
            (Prospect, Inactive),
            (Active, Inactive),
            (Active, Churned),
            (Inactive, Active),
            (Inactive, Churned),
            (Churned, Active),
        ];
        for from in all {
            for to in all {
                let expected = from == to || allowed_pairs.contains(&(from, to));
                assert_eq!(allowed(from, to), expected, "{from:?} -> {to:?}");
            }
        }
        assert!(allowed_initially(Lead) && allowed_initially(Active));
        assert!(!allowed_initially(Churned) && !allowed_initially(Inactive));
    }
}
