//! Properties of placing and verifying: for any batch, placing keeps the first row
//! of each event id not already in the window (the dedup window's rule), numbers
//! them without a gap, and the rows verify from the head they follow; changing any
//! one of them breaks the chain at that row or before.

use std::collections::HashSet;

use proptest::prelude::*;

use super::db::{Head, hex32, place};
use super::verify::Walk;
use super::{Entry, Record};

fn entry() -> impl Strategy<Value = Entry> {
    (
        // Few distinct ids, so batches repeat them.
        "[a-d]{1,2}",
        "[a-z]{1,8}\\.[a-z]{1,8}",
        proptest::option::of(".{0,12}"),
        proptest::option::of("[a-z]{0,6}"),
        ".{0,40}",
        any::<i64>(),
        proptest::option::of("/[a-z]{0,6}"),
    )
        .prop_map(
            |(event_id, event_type, actor, resource_id, details, time_us, source)| Entry {
                event_id,
                event_type,
                actor,
                actor_token: None,
                actor_ip: None,
                resource_type: resource_id.as_ref().map(|_| "user".into()),
                resource_id,
                details,
                time_us,
                source,
            },
        )
}

fn walk_from(after: Head) -> Walk {
    Walk::from((after.0 > 0).then(|| (after.0, hex32(&after.1))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn placing_keeps_each_new_id_once_and_the_rows_verify(
        entries in proptest::collection::vec(entry(), 0..24),
        window in proptest::collection::hash_set("[a-d]{1,2}", 0..4),
        after_seq in 0i64..1_000_000,
        after_hash in any::<[u8; 32]>(),
        recorded_us in any::<i64>(),
    ) {
        let after_hash = if after_seq == 0 { [0; 32] } else { after_hash };
        let after = (after_seq, after_hash);
        let placed = place("c1", after, entries.clone(), recorded_us, &window);

        let mut seen = HashSet::new();
        let expected: Vec<&Entry> = entries
            .iter()
            .filter(|e| !window.contains(&e.event_id) && seen.insert(e.event_id.clone()))
            .collect();
        let kept = placed.entries();
        prop_assert_eq!(kept.iter().collect::<Vec<_>>(), expected);
        let seqs: Vec<i64> = placed.seqs().map(|(_, seq)| seq).collect();
        let gapless: Vec<i64> = (after_seq + 1..=after_seq + kept.len() as i64).collect();
        prop_assert_eq!(seqs, gapless);

        let records = placed.records("c1");
        let mut walk = walk_from(after);
        for record in &records {
            prop_assert!(walk.step(record).is_ok(), "{:?}", walk.step(record));
        }
        prop_assert_eq!(walk.after(), placed.head.0);
        if let Some(last) = records.last() {
            prop_assert_eq!(&last.hash, &hex32(&placed.head.1));
        }
    }

    #[test]
    fn any_change_to_a_placed_row_is_seen_at_it_or_before(
        entries in proptest::collection::vec(entry(), 1..16),
        at in any::<prop::sample::Index>(),
        change in 0u8..6,
    ) {
        let placed = place("c1", (0, [0; 32]), entries, 7, &HashSet::new());
        let mut records: Vec<Record> = placed.records("c1");
        let at = at.index(records.len());
        let row = &mut records[at];
        match change {
            0 => row.entry.event_id.push('x'),
            1 => row.entry.details.push(' '),
            2 => row.entry.time_us = row.entry.time_us.wrapping_add(1),
            3 => row.entry.actor = row.entry.actor.take().xor(Some(String::new())),
            4 => row.recorded_us += 1,
            _ => row.chain = "c2".into(),
        }
        let mut walk = walk_from((0, [0; 32]));
        let broke = records.iter().position(|r| walk.step(r).is_err());
        prop_assert_eq!(broke, Some(at));
    }
}
