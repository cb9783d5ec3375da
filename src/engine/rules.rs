//! The rules in force and references to them that cannot go stale: every
//! reload starts a new generation, and a [`RuleId`] of an older generation
//! resolves to nothing instead of to whatever rule now sits at its index.

use std::sync::Arc;

use crate::policy::{Limit, Policy, Rule};

/// A rule of one generation of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId {
    generation: u64,
    index: usize,
}

/// The policy in force and its generation.
#[derive(Debug, Clone)]
pub struct Rules {
    policy: Arc<Policy>,
    generation: u64,
    /// No rule needs more than the winning deadline (no dry-run, idle or
    /// fraud-guard rules): the fast evaluation path decides alone.
    deadline_suffices: bool,
}

impl Rules {
    /// The first generation of `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self::of_generation(policy, 0)
    }

    fn of_generation(policy: Arc<Policy>, generation: u64) -> Self {
        let deadline_suffices = !policy.has_idle_rules()
            && !policy.has_concurrency_rules()
            && !policy.rules.iter().any(|rule| rule.action.dry_run);
        Self {
            policy,
            generation,
            deadline_suffices,
        }
    }

    /// Puts `policy` in force as the next generation; returns the previous
    /// rules, whose ids still resolve against them.
    pub fn replace(&mut self, policy: Arc<Policy>) -> Rules {
        let next = Rules::of_generation(policy, self.generation + 1);
        std::mem::replace(self, next)
    }

    /// The policy, for evaluation.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether the winning deadline alone is all the rules need evaluated.
    pub fn deadline_suffices(&self) -> bool {
        self.deadline_suffices
    }

    /// The id of the rule at `index` of this generation.
    pub fn id(&self, index: usize) -> RuleId {
        RuleId {
            generation: self.generation,
            index,
        }
    }

    /// The index of `id` in this generation's rules, if it is of this generation.
    pub fn index(&self, id: RuleId) -> Option<usize> {
        (id.generation == self.generation && id.index < self.policy.rules.len()).then_some(id.index)
    }

    /// The rule `id` names, if it is of this generation.
    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.policy.rules.get(self.index(id)?)
    }

    /// The rule's name, for audit records and `/status`.
    pub fn name(&self, id: RuleId) -> Option<&str> {
        self.get(id).map(|rule| rule.name.as_str())
    }

    /// Every rule's name with its id, to find a rule of older rules by name.
    pub fn named(&self) -> impl Iterator<Item = (&str, RuleId)> {
        self.policy
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| (rule.name.as_str(), self.id(index)))
    }

    /// The rules that are dry-run by their own action.
    pub fn dry_run_ids(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.action.dry_run)
            .map(|(index, _)| self.id(index))
    }

    /// The names of idle rules: `once` reports them as not evaluated.
    pub fn idle_rule_names(&self) -> Vec<String> {
        self.policy
            .rules
            .iter()
            .filter(|rule| matches!(rule.limit, Limit::IdleTimeout(_)))
            .map(|rule| rule.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn rule(name: &str) -> Rule {
        Rule::for_test(name, Limit::IdleTimeout(std::time::Duration::from_secs(60)))
    }

    #[test]
    fn an_id_of_an_older_generation_resolves_to_nothing() {
        let mut rules = Rules::new(Arc::new(Policy::new(vec![rule("a"), rule("b")])));
        let b = rules.id(1);
        assert_eq!(rules.name(b), Some("b"));
        // The reload drops `a`: index 1 is out of range, index 0 is `b`.
        let old = rules.replace(Arc::new(Policy::new(vec![rule("b")])));
        assert_eq!(
            old.name(b),
            Some("b"),
            "the old generation still resolves it"
        );
        assert_eq!(rules.get(b).map(|r| r.name.as_str()), None);
        assert_eq!(
            rules.index(old.id(0)),
            None,
            "never the rule now at that index"
        );
        let (name, id) = rules.named().next().unwrap();
        assert_eq!((name, rules.name(id)), ("b", Some("b")));
    }
}
