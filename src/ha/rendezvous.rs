//! Rendezvous (highest random weight) hashing: which live member should lead
//! an account. Every member computes the same answer from the same member
//! list, and when a member joins or leaves only the accounts it wins or held
//! move.

/// FNV-1a over the bytes, then a 64-bit finalizer so that similar names
/// spread well. Fixed here (not std's hasher) so every version and build of
/// callwarden agrees on the placement.
fn weight(account: &str, member: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(member.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member that should lead `account`, or `None` when there are none.
/// Ties (practically impossible) go to the smaller name, so the answer
/// never depends on the order of `members`.
pub fn preferred_member<'a, S: AsRef<str>>(account: &str, members: &'a [S]) -> Option<&'a str> {
    members.iter().map(AsRef::as_ref).max_by(|a, b| {
        weight(account, a)
            .cmp(&weight(account, b))
            .then_with(|| b.cmp(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    #[test]
    fn no_members_no_leader() {
        let none: [&str; 0] = [];
        assert_eq!(preferred_member("acct", &none), None);
    }

    #[test]
    fn balanced_over_many_accounts() {
        let members = names("ops-host", 3);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for a in 0..3000 {
            let m = preferred_member(&format!("account-{a}"), &members).unwrap();
            *counts.entry(m).or_default() += 1;
        }
        for m in &members {
            let c = counts.get(m.as_str()).copied().unwrap_or(0);
            assert!((850..=1150).contains(&c), "{m} got {c} of 3000");
        }
    }

    proptest! {
        #[test]
        fn stable_under_reordering(account in "[a-z0-9-]{1,20}",
                                   members in proptest::collection::btree_set("[a-z0-9-]{1,12}", 1..8),
                                   seed in any::<u64>()) {
            let sorted: Vec<String> = members.into_iter().collect();
            let mut shuffled = sorted.clone();
            let len = shuffled.len();
            shuffled.rotate_left((seed as usize) % len);
            if seed % 2 == 0 { shuffled.reverse(); }
            prop_assert_eq!(preferred_member(&account, &sorted), preferred_member(&account, &shuffled));
        }

        #[test]
        fn removing_a_member_moves_only_its_accounts(
            accounts in proptest::collection::btree_set("[a-z0-9]{1,10}", 1..40),
            members in proptest::collection::btree_set("[a-z0-9]{1,8}", 2..7),
            gone_index in any::<usize>()) {
            let members: Vec<String> = members.into_iter().collect();
            let gone = members[gone_index % members.len()].clone();
            let rest: Vec<String> = members.iter().filter(|m| **m != gone).cloned().collect();
            for a in &accounts {
                let before = preferred_member(a, &members).unwrap();
                let after = preferred_member(a, &rest).unwrap();
                if before != gone {
                    prop_assert_eq!(before, after);
                }
            }
        }

        #[test]
        fn adding_a_member_moves_accounts_only_to_it(
            accounts in proptest::collection::btree_set("[a-z0-9]{1,10}", 1..40),
            members in proptest::collection::btree_set("[a-z0-9]{1,8}", 1..6),
            new in "[A-Z]{1,8}") {
            let members: Vec<String> = members.into_iter().collect();
            let mut more = members.clone();
            more.push(new.clone());
            for a in &accounts {
                let before = preferred_member(a, &members).unwrap();
                let after = preferred_member(a, &more).unwrap();
                prop_assert!(after == before || after == new);
            }
        }
    }
}
