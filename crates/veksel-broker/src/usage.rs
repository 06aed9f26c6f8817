//! Usage statistics that name no consumer: harvests counted per day, dataset and
//! consumer, each consumer published as a peppered hash (HMAC-SHA256 with a secret
//! of the broker's), and a figure published only where it counts at least `k`
//! harvests. Consumers below the threshold are folded into one `others` row, which is
//! itself published only if it folds at least three consumers (with two, each could
//! subtract its own count and learn the other's) and reaches `k`; no total is
//! published beside the rows, so nothing suppressed can be computed back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use std::collections::BTreeMap;

/// The smallest `k` accepted: below it a figure singles out too few harvests.
pub const MIN_K: u64 = 3;
/// The fewest consumers an `others` row folds.
pub const MIN_FOLDED: usize = 3;

/// A consumer as the statistics name it: the first 16 bytes of
/// `HMAC-SHA256(pepper, consumer)`, base64url. Without the pepper, which never leaves
/// the broker, nobody can test a guess.
pub fn consumer_hash(pepper: &[u8], consumer: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, pepper);
    let tag = aws_lc_rs::hmac::sign(&key, consumer.as_bytes());
    URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
}

/// One published figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// The dataset.
    pub dataset: String,
    /// The consumer's hash, or `None` for the others folded together.
    pub consumer: Option<String>,
    /// Harvests.
    pub count: u64,
}

/// The publishable figures of `counts` ((day, dataset, consumer) → harvests) with
/// threshold `k` (at least [`MIN_K`]).
pub fn publish(
    counts: &BTreeMap<(String, String, String), u64>,
    pepper: &[u8],
    k: u64,
) -> Vec<UsageRow> {
    let k = k.max(MIN_K);
    let mut rows = Vec::new();
    let mut others: BTreeMap<(&str, &str), (u64, usize)> = BTreeMap::new();
    for ((day, dataset, consumer), &count) in counts {
        if count >= k {
            rows.push(UsageRow {
                day: day.clone(),
                dataset: dataset.clone(),
                consumer: Some(consumer_hash(pepper, consumer)),
                count,
            });
        } else if count > 0 {
            let folded = others.entry((day, dataset)).or_default();
            folded.0 += count;
            folded.1 += 1;
        }
    }
    for ((day, dataset), (count, consumers)) in others {
        if consumers >= MIN_FOLDED && count >= k {
            rows.push(UsageRow {
                day: day.to_owned(),
                dataset: dataset.to_owned(),
                consumer: None,
                count,
            });
        }
    }
    rows.sort_by(|a, b| (&a.day, &a.dataset, &a.consumer).cmp(&(&b.day, &b.dataset, &b.consumer)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: &[(&str, &str, &str, u64)]) -> BTreeMap<(String, String, String), u64> {
        rows.iter()
            .map(|(d, s, c, n)| (((*d).into(), (*s).into(), (*c).into()), *n))
            .collect()
    }

    #[test]
    fn small_figures_are_folded_or_suppressed_and_no_consumer_is_named() {
        let pepper = b"a secret of the broker";
        let c = counts(&[
            ("2026-12-07", "person-income", "DEV/MUN/30000003", 40),
            ("2026-12-07", "person-income", "DEV/MUN/30000004", 2),
            ("2026-12-07", "person-income", "DEV/MUN/30000005", 1),
            ("2026-12-07", "person-income", "DEV/MUN/30000006", 1),
            ("2026-12-07", "person-address", "DEV/MUN/30000003", 2),
            ("2026-12-08", "person-income", "DEV/MUN/30000004", 9),
        ]);
        let rows = publish(&c, pepper, 3);
        let text = serde_json::to_string(&rows).unwrap();
        assert!(!text.contains("DEV/MUN"), "{text}");
        let figures: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.day.as_str(),
                    r.dataset.as_str(),
                    r.consumer.is_some(),
                    r.count,
                )
            })
            .collect();
        assert_eq!(
            figures,
            vec![
                // 2 + 1 + 1 from three consumers: folded and published.
                ("2026-12-07", "person-income", false, 4),
                ("2026-12-07", "person-income", true, 40),
                ("2026-12-08", "person-income", true, 9),
            ]
        );
        // The address dataset's 2 by one consumer is not published at all.
        assert!(!rows.iter().any(|r| r.dataset == "person-address"));
        // One consumer, one hash across days; another pepper, another hash.
        let a = consumer_hash(pepper, "DEV/MUN/30000004");
        assert_eq!(rows[2].consumer.as_deref(), Some(a.as_str()));
        assert_ne!(consumer_hash(b"another", "DEV/MUN/30000004"), a);
        // k below the floor is raised to it.
        assert_eq!(publish(&c, pepper, 1), rows);
        // Two small consumers are not folded: each could compute the other's count.
        let two = counts(&[
            ("2026-12-07", "d", "DEV/MUN/30000008", 2),
            ("2026-12-07", "d", "DEV/MUN/30000009", 2),
        ]);
        assert!(publish(&two, pepper, 3).is_empty());
        // A lone small consumer is never published, even above k when folded alone.
        let lone = counts(&[("2026-12-07", "d", "DEV/MUN/30000009", 2)]);
        assert!(publish(&lone, pepper, 3).is_empty());
    }
}
