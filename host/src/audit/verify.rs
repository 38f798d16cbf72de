//! Proof that the audit log was not changed: every chain is walked from its anchor
//! (or genesis), each row's hash recomputed and its link to the row before checked.
//! Signed checkpoints (see [`super::checkpoint`]) extend the proof to a chain that was
//! rewritten whole or cut short.

use serde::Serialize;

use super::db;
use super::record::{GENESIS, Record};
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
        let mut walk = Walk::from(db::anchor(store, chain).await?);
        loop {
            let page = db::chain_page(store, chain, walk.after(), PAGE).await?;
            if page.is_empty() {
                break;
            }
            let full = page.len() as i64 == PAGE;
            for record in &page {
                let expected_seq = walk.after() + 1;
                if let Err(reason) = walk.step(record) {
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

/// One chain's rows checked in order, from its anchor (the last purged row's place
/// and hash) or from genesis. Pure, so that any sequence of rows can be walked.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The place of the last row accepted (or of the anchor).
    after: i64,
    prev_hash: String,
}

impl From<Option<(i64, String)>> for Walk {
    fn from(anchor: Option<(i64, String)>) -> Walk {
        let (after, prev_hash) = anchor.unwrap_or_else(|| (0, hex::encode(GENESIS)));
        Walk { after, prev_hash }
    }
}

impl Walk {
    /// The place of the last row accepted: the next must be one past it.
    pub fn after(&self) -> i64 {
        self.after
    }

    /// Accepts `record` as the chain's next row, or says why it is not.
    pub fn step(&mut self, record: &Record) -> Result<(), String> {
        let expected_seq = self.after.saturating_add(1);
        if record.chain_seq != expected_seq {
            return Err(format!(
                "row {expected_seq} of the chain is missing (found {} instead)",
                record.chain_seq
            ));
        }
        if record.prev_hash != self.prev_hash {
            return Err(
                "does not link to the row before it (a row was removed, inserted or reordered)"
                    .into(),
            );
        }
        if hex::encode(record.compute_hash()) != record.hash {
            return Err("its contents do not match its hash (the row was changed)".into());
        }
        self.after = expected_seq;
        self.prev_hash.clone_from(&record.hash);
        Ok(())
    }
}

fn broken(
    rows: u64,
    chains: usize,
    chain: &str,
    chain_seq: i64,
    record: Option<&Record>,
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
