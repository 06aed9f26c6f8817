//! People who may work in a node's console by their own login instead of an admin
//! token: a person number, the name the pages show, and a role of the node's. Each
//! node keeps them in its own `console_people` table (created by [`PEOPLE_TABLE`]);
//! a grant is removed, not flagged, so a revoked person has no row left to match.

use crate::{Db, StoreError};

/// DDL of the table this module uses, for a node's migrations.
pub const PEOPLE_TABLE: &str = "CREATE TABLE console_people (
    person_id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
    granted_by TEXT NOT NULL, granted_at BIGINT NOT NULL)";

/// Longest name accepted.
pub const MAX_NAME: usize = 200;

/// A person's role in the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Officer {
    /// The person number their login verifies (`pid`).
    pub person_id: String,
    /// How the pages and the audit trail name them.
    pub name: String,
    /// The node's role they act in.
    pub role: String,
    /// Who granted it (a token id or `person:` and a person number).
    pub granted_by: String,
    /// When, Unix ms.
    pub granted_at: i64,
}

/// Why a grant was refused.
pub fn check_grant(person_id: &str, name: &str) -> Result<(), String> {
    if !(6..=12).contains(&person_id.len()) || !person_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a person number has 6 to 12 digits".into());
    }
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(format!(
            "a name has 1 to {MAX_NAME} characters and no control characters"
        ));
    }
    Ok(())
}

/// Grants `role` to a person, or changes their role and name.
pub async fn grant(db: &Db, officer: &Officer) -> Result<(), StoreError> {
    check_grant(&officer.person_id, &officer.name).map_err(StoreError::Invalid)?;
    sqlx::query(
        "INSERT INTO console_people (person_id, name, role, granted_by, granted_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (person_id) DO UPDATE SET name = excluded.name, role = excluded.role,
             granted_by = excluded.granted_by, granted_at = excluded.granted_at",
    )
    .bind(&officer.person_id)
    .bind(officer.name.trim())
    .bind(&officer.role)
    .bind(&officer.granted_by)
    .bind(officer.granted_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The grant of a person, if they have one.
pub async fn find(db: &Db, person_id: &str) -> Result<Option<Officer>, StoreError> {
    let row: Option<(String, String, String, i64)> = sqlx::query_as(
        "SELECT name, role, granted_by, granted_at FROM console_people WHERE person_id = $1",
    )
    .bind(person_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|(name, role, granted_by, granted_at)| Officer {
        person_id: person_id.to_owned(),
        name,
        role,
        granted_by,
        granted_at,
    }))
}

/// Every grant, by name.
pub async fn list(db: &Db) -> Result<Vec<Officer>, StoreError> {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT person_id, name, role, granted_by, granted_at FROM console_people ORDER BY name, person_id",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(person_id, name, role, granted_by, granted_at)| Officer {
            person_id,
            name,
            role,
            granted_by,
            granted_at,
        })
        .collect())
}

/// Removes a person's grant.
pub async fn revoke(db: &Db, person_id: &str) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM console_people WHERE person_id = $1")
        .bind(person_id)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("a grant to {person_id}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DbOptions, Migration};

    fn officer(person_id: &str, name: &str, role: &str) -> Officer {
        Officer {
            person_id: person_id.into(),
            name: name.into(),
            role: role.into(),
            granted_by: "tok-1".into(),
            granted_at: 1,
        }
    }

    #[tokio::test]
    async fn grant_change_find_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.db"), &DbOptions::default())
            .await
            .unwrap();
        let table = Migration {
            version: 1,
            name: "people",
            sql: PEOPLE_TABLE,
        };
        db.migrate("t", &[table]).await.unwrap();
        grant(&db, &officer("01017012345", " Anna Berg ", "observer"))
            .await
            .unwrap();
        grant(&db, &officer("01017012345", "Anna Berg", "admin"))
            .await
            .unwrap();
        let found = find(&db, "01017012345").await.unwrap().unwrap();
        assert_eq!(
            (found.name.as_str(), found.role.as_str()),
            ("Anna Berg", "admin")
        );
        assert_eq!(list(&db).await.unwrap().len(), 1);
        assert_eq!(find(&db, "02027012345").await.unwrap(), None);
        for (pid, name) in [
            ("123", "A"),
            ("12345678901x", "A"),
            ("0101701234", " "),
            ("0101701234", "a\u{7}b"),
        ] {
            assert!(
                matches!(
                    grant(&db, &officer(pid, name, "admin")).await,
                    Err(StoreError::Invalid(_))
                ),
                "{pid:?} {name:?}"
            );
        }
        revoke(&db, "01017012345").await.unwrap();
        assert_eq!(find(&db, "01017012345").await.unwrap(), None);
        assert!(matches!(
            revoke(&db, "01017012345").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
