//! Retrying a dead letter: its row goes through its writer again, as if new. Once
//! the row is in, the dead letter goes; refused again, it stays, with the new error.

use super::{DeadLetter, DeadLetters, Kind};
use crate::audit::{Entry, Recorded};
use crate::eventlog::{Log, LogError, event_of_entry};
use crate::webhooks::Webhooks;

/// What a retry came to.
#[derive(Debug)]
pub enum Retried {
    /// The row is in the log now (an event is dispatched as any other).
    InLog,
    /// The log already had the event (a resend got in after a fix): nothing was
    /// written; the dead letter went.
    AlreadyInLog,
    /// The deliveries are stored (and are sent as any other).
    Stored,
    /// The database refused the row again: the dead letter stays, as it is now.
    StillRefused(DeadLetter),
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no dead letter has id {0}")]
    NotFound(i64),
    #[error("dead letter {0} holds a row this version of evhost cannot read: {1}")]
    Unreadable(i64, String),
    #[error("dead letter {0} cannot be retried: {1}")]
    Cannot(i64, String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the dead letters' table cannot be read or written")]
    Db(#[from] sqlx::Error),
}

/// Writes dead letter `id`'s row again (deliveries through `webhooks`).
pub async fn retry(
    dead: &DeadLetters,
    log: &Log,
    webhooks: Option<&Webhooks>,
    id: i64,
) -> Result<Retried, RetryError> {
    let letter = dead.get(id).await?.ok_or(RetryError::NotFound(id))?;
    if letter.kind == Kind::Delivery {
        let webhooks = webhooks.ok_or_else(|| {
            RetryError::Cannot(
                id,
                "webhooks are turned off (webhooks.enabled: false)".into(),
            )
        })?;
        let again = match webhooks.redeliver(&letter.body).await {
            Ok(Ok(())) => Ok(Retried::Stored),
            Ok(Err(_)) => Err(()),
            Err(why) => return Err(RetryError::Cannot(id, why)),
        };
        return settle(dead, &letter, again).await;
    }
    let entry: Entry = serde_json::from_str(&letter.body)
        .map_err(|e| RetryError::Unreadable(id, e.to_string()))?;
    let again = match letter.kind {
        Kind::Delivery => unreachable!("handled above"),
        Kind::Event => {
            let event = event_of_entry(&entry)
                .ok_or_else(|| RetryError::Unreadable(id, "not an event".into()))?;
            let accepted = log.publish(vec![event], false).await?;
            match accepted.first() {
                Some(a) if a.duplicate => Ok(Retried::AlreadyInLog),
                Some(a) if a.dead_letter.is_some() => Err(()),
                _ => Ok(Retried::InLog),
            }
        }
        Kind::Record => match log
            .audit()
            .write_entry(entry)
            .await
            .map_err(LogError::from)?
        {
            Recorded::InLog => Ok(Retried::InLog),
            Recorded::SetAside(_) => Err(()),
        },
    };
    settle(dead, &letter, again).await
}

/// Removes a dead letter whose row is in now; reads it back if refused again.
async fn settle(
    dead: &DeadLetters,
    letter: &DeadLetter,
    again: Result<Retried, ()>,
) -> Result<Retried, RetryError> {
    let id = letter.id;
    match again {
        Ok(retried) => {
            dead.remove(id).await?;
            tracing::info!(
                id,
                kind = letter.kind.as_str(),
                key = letter.key,
                "dead letter retried: the row is in the log"
            );
            Ok(retried)
        }
        Err(()) => {
            let now = dead.get(id).await?.ok_or(RetryError::NotFound(id))?;
            Ok(Retried::StillRefused(now))
        }
    }
}
