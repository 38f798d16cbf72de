//! Chain verification of arbitrary rows. A chain placed by evhost verifies whole;
//! any one change to a row breaks it at that row or before; rows of any content are
//! walked without a panic.
#![no_main]

use arbitrary::Arbitrary;
use evhost::audit::verify::Walk;
use evhost::audit::{Entry, Record};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Row {
    event_id: String,
    event_type: String,
    actor: Option<String>,
    actor_token: Option<String>,
    actor_ip: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    details: String,
    time_us: i64,
    source: Option<String>,
}

#[derive(Debug, Arbitrary)]
enum Change {
    EventId,
    Details,
    Actor,
    Source,
    TimeUs,
    RecordedUs,
    ChainSeq,
    PrevHash,
    Hash,
    Remove,
    SwapWithNext,
}

#[derive(Debug, Arbitrary)]
struct Input {
    chain: String,
    anchor: Option<(i64, [u8; 32])>,
    recorded_us: i64,
    rows: Vec<Row>,
    change: Option<(u8, Change)>,
    /// Rows as a damaged database could hold them.
    raw: Vec<(i64, String, String, Row)>,
}

fuzz_target!(|input: Input| {
    let anchor = input
        .anchor
        .map(|(seq, hash)| (seq.clamp(0, i64::MAX - 1_000), hash));
    let start = || Walk::from(anchor.map(|(seq, hash)| (seq, hex(&hash))));
    let mut prev = anchor.map_or([0; 32], |(_, hash)| hash);
    let mut seq = anchor.map_or(0, |(seq, _)| seq);
    let mut records = Vec::new();
    for row in input.rows.into_iter().take(64) {
        seq += 1;
        let record = Record::chain(&input.chain, seq, entry(row), input.recorded_us, &prev);
        prev = record.compute_hash();
        records.push(record);
    }
    let mut walk = start();
    for record in &records {
        walk.step(record).expect("a placed chain verifies");
    }

    if let Some((at, change)) = input.change
        && !records.is_empty()
    {
        let at = usize::from(at) % records.len();
        let mut changed = records.clone();
        let r = &mut changed[at];
        match change {
            Change::EventId => r.entry.event_id.push('x'),
            Change::Details => r.entry.details.push(' '),
            Change::Actor => r.entry.actor = r.entry.actor.take().xor(Some(String::new())),
            Change::Source => r.entry.source = r.entry.source.take().xor(Some(String::new())),
            Change::TimeUs => r.entry.time_us = r.entry.time_us.wrapping_add(1),
            Change::RecordedUs => r.recorded_us = r.recorded_us.wrapping_add(1),
            Change::ChainSeq => r.chain_seq = r.chain_seq.wrapping_add(1),
            Change::PrevHash => r.prev_hash = flip(&r.prev_hash),
            Change::Hash => r.hash = flip(&r.hash),
            Change::Remove => {
                changed.remove(at);
            }
            Change::SwapWithNext => {
                if at + 1 == changed.len() {
                    return;
                }
                changed.swap(at, at + 1);
            }
        }
        let mut walk = start();
        let broke_at = changed.iter().position(|record| walk.step(record).is_err());
        match (broke_at, matches!(change, Change::Remove)) {
            // Removing the last row leaves a shorter chain that is whole.
            (None, true) if at == records.len() - 1 => {}
            (Some(i), _) => assert!(i <= at, "{change:?} at {at} seen only at {i}"),
            (None, _) => panic!("{change:?} at {at} was not seen"),
        }
    }

    let mut walk = start();
    for (chain_seq, prev_hash, hash, row) in input.raw.into_iter().take(16) {
        let record = Record {
            seq: 0,
            chain: input.chain.clone(),
            chain_seq,
            entry: entry(row),
            recorded_us: input.recorded_us,
            prev_hash,
            hash,
        };
        if walk.step(&record).is_err() {
            break;
        }
    }
});

fn entry(row: Row) -> Entry {
    Entry {
        event_id: row.event_id,
        event_type: row.event_type,
        actor: row.actor,
        actor_token: row.actor_token,
        actor_ip: row.actor_ip,
        resource_type: row.resource_type,
        resource_id: row.resource_id,
        details: row.details,
        time_us: row.time_us,
        source: row.source,
    }
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The same text with its first character changed.
fn flip(text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    match chars.first_mut() {
        Some(c) => *c = if *c == '0' { '1' } else { '0' },
        None => chars.push('0'),
    }
    chars.into_iter().collect()
}
