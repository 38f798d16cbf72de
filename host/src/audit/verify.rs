//! Proof that the audit log was not changed: every chain is walked from its anchor
//! (or genesis), each row's hash recomputed and its link to the row before checked.
//! Signed checkpoints (see [`super::checkpoint`]) extend the proof to a chain that was
//! rewritten whole or cut short.

use serde::Serialize;

use super::db;
use super::record::GENESIS;
use crate::store::Store;

/// Rows read per page while verifying.
const PAGE: i64 = 5000;

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub ok: bool,
    /// Rows checked.
    pub rows: u64,
    pub chains: usize,
    /// The first break found, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Break>,
}

/// Where a chain breaks, and how.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Break {
    pub chain: String,
    /// Position in the chain where the break was seen.
    pub chain_seq: i64,
    /// The row's global sequence number, when the row exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub reason: String,
}

/// Verifies every chain in the store.
pub async fn verify(store: &Store) -> Result<Report, sqlx::Error> {
    let chains = db::chains(store).await?;
    let mut rows = 0u64;
    for chain in &chains {
        let (start_seq, start_hash) = match db::anchor(store, chain).await? {
            Some((seq, hash)) => (seq, hash),
            None => (0, hex::encode(GENESIS)),
        };
        let mut expected_seq = start_seq + 1;
        let mut prev_hash = start_hash;
        loop {
            let page = db::chain_page(store, chain, expected_seq - 1, PAGE).await?;
            if page.is_empty() {
                break;
            }
            let full = page.len() as i64 == PAGE;
            for record in &page {
                let problem = if record.chain_seq != expected_seq {
                    Some(format!(
                        "row {expected_seq} of the chain is missing (found {} instead)",
                        record.chain_seq
                    ))
                } else if record.prev_hash != prev_hash {
                    Some("does not link to the row before it (a row was removed, inserted or reordered)".into())
                } else if hex::encode(record.compute_hash()) != record.hash {
                    Some("its contents do not match its hash (the row was changed)".into())
                } else {
                    None
                };
                if let Some(reason) = problem {
                    return Ok(broken(
                        rows,
                        chains.len(),
                        chain,
                        expected_seq,
                        Some(record),
                        reason,
                    ));
                }
                rows += 1;
                prev_hash = record.hash.clone();
                expected_seq += 1;
            }
            if !full {
                break;
            }
        }
    }
    Ok(Report {
        ok: true,
        rows,
        chains: chains.len(),
        broken: None,
    })
}

fn broken(
    rows: u64,
    chains: usize,
    chain: &str,
    chain_seq: i64,
    record: Option<&super::record::Record>,
    reason: String,
) -> Report {
    Report {
        ok: false,
        rows,
        chains,
        broken: Some(Break {
            chain: chain.to_string(),
            chain_seq,
            seq: record.map(|r| r.seq),
            event_id: record.map(|r| r.entry.event_id.clone()),
            reason,
        }),
    }
}
