//! Consent without I/O: a consumer's request for a subject's consent (who asks, for
//! which datasets and purposes, why, until when), its life (pending → given or
//! declined → revoked or expired), and the `authorization_details` entry by which a
//! consent travels in an access token — Altinn 3's consent shape (`id`, `from`, `to`,
//! `consented`, `validTo`, `consentRights`), under veksel's own type
//! [`CONSENT_TYPE`]. The broker checks that entry against its own record before each
//! harvest, so a revocation takes effect on the next one.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The `authorization_details` type of a consent (RFC 9396).
pub const CONSENT_TYPE: &str = "urn:veksel:consent";
/// How a person is named in a consent: this prefix and their person number.
pub const PERSON_URN: &str = "urn:veksel:person:";
/// Longest message a consumer may show the subject, characters.
pub const MAX_MESSAGE: usize = 1000;
/// Most datasets one consent covers.
pub const MAX_CONSENT_DATASETS: usize = 20;

/// A dataset and the purpose a consent allows it for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsentRight {
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
}

/// Where a consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ConsentState {
    /// Asked for; the subject has not answered.
    Pending,
    /// Given, at Unix seconds.
    Given {
        /// When.
        at: i64,
    },
    /// Declined, at Unix seconds.
    Declined {
        /// When.
        at: i64,
    },
    /// Revoked by the subject, at Unix seconds.
    Revoked {
        /// When.
        at: i64,
    },
}

/// A request for consent and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    /// Its id (a UUID).
    pub id: String,
    /// The subject's person number.
    pub from: String,
    /// The requestor, a member id.
    pub to: String,
    /// What it allows.
    pub rights: Vec<ConsentRight>,
    /// Until when, Unix seconds.
    pub valid_to: i64,
    /// The consumer's words to the subject: why it asks.
    pub message: String,
    /// Where the subject's browser goes after answering (https, or http on loopback).
    pub redirect_url: Option<String>,
    /// When it was asked for, Unix seconds.
    pub created_at: i64,
    /// Where it stands.
    #[serde(flatten)]
    pub state: ConsentState,
}

/// Why a consent request or a change to it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// The request is malformed.
    #[error("consent request: {0}")]
    Invalid(String),
    /// Only the subject may answer or revoke.
    #[error("only the person the consent is about may answer or revoke it")]
    NotTheSubject,
    /// The consent is not in a state that allows the change.
    #[error("the consent is {0}: it cannot be {1}")]
    Transition(&'static str, &'static str),
    /// Past its validity.
    #[error("the consent has expired")]
    Expired,
}

fn redirect_ok(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    // Userinfo (`http://127.0.0.1@evil.example/`) would make the host another one.
    if rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .contains('@')
    {
        return false;
    }
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit_once(':')
        .map_or(
            rest.split(['/', '?', '#']).next().unwrap_or_default(),
            |(h, _)| h,
        );
    let loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
    url.len() <= 500
        && !url.chars().any(|c| c.is_control() || c.is_whitespace())
        && !host.is_empty()
        && (scheme == "https" || (scheme == "http" && loopback))
}

impl Consent {
    /// A new, pending request, checked: `max_days` is the shortest consent period of
    /// the datasets asked for.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        id: String,
        from: &str,
        to: &str,
        rights: Vec<ConsentRight>,
        valid_to: i64,
        message: &str,
        redirect_url: Option<String>,
        now: i64,
        max_days: u32,
    ) -> Result<Self, ConsentError> {
        let invalid = |m: &str| Err(ConsentError::Invalid(m.to_owned()));
        if !crate::dataset::SubjectKind::Person.accepts(from) {
            return invalid("the subject is a person number of 6 to 12 digits");
        }
        if to.parse::<veksel_id::MemberId>().is_err() {
            return invalid("the requestor is a member id");
        }
        if rights.is_empty() || rights.len() > MAX_CONSENT_DATASETS {
            return Err(ConsentError::Invalid(format!(
                "1 to {MAX_CONSENT_DATASETS} datasets"
            )));
        }
        if valid_to <= now || valid_to > now + i64::from(max_days) * 86_400 {
            return Err(ConsentError::Invalid(format!(
                "validTo must be within the next {max_days} days"
            )));
        }
        let message = message.trim();
        if message.is_empty()
            || message.chars().count() > MAX_MESSAGE
            || message.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(ConsentError::Invalid(format!(
                "a message to the subject of 1 to {MAX_MESSAGE} characters: why the consent is asked for"
            )));
        }
        if redirect_url.as_deref().is_some_and(|u| !redirect_ok(u)) {
            return invalid("redirectUrl must be https (http only on loopback)");
        }
        Ok(Self {
            id,
            from: from.to_owned(),
            to: to.to_owned(),
            rights,
            valid_to,
            message: message.to_owned(),
            redirect_url,
            created_at: now,
            state: ConsentState::Pending,
        })
    }

    fn state_name(&self, now: i64) -> &'static str {
        if now >= self.valid_to {
            return "expired";
        }
        match self.state {
            ConsentState::Pending => "pending",
            ConsentState::Given { .. } => "given",
            ConsentState::Declined { .. } => "declined",
            ConsentState::Revoked { .. } => "revoked",
        }
    }

    fn by_subject(&self, person: &str) -> Result<(), ConsentError> {
        if bool::from(person.as_bytes().ct_eq(self.from.as_bytes())) {
            Ok(())
        } else {
            Err(ConsentError::NotTheSubject)
        }
    }

    /// The subject (`person`, as their login verified) gives or declines it.
    pub fn answer(&mut self, person: &str, give: bool, now: i64) -> Result<(), ConsentError> {
        self.by_subject(person)?;
        match (self.state, self.state_name(now)) {
            (_, "expired") => Err(ConsentError::Expired),
            (ConsentState::Pending, _) => {
                self.state = if give {
                    ConsentState::Given { at: now }
                } else {
                    ConsentState::Declined { at: now }
                };
                Ok(())
            }
            (_, state) => Err(ConsentError::Transition(
                state,
                if give { "given" } else { "declined" },
            )),
        }
    }

    /// The subject revokes a consent they gave.
    pub fn revoke(&mut self, person: &str, now: i64) -> Result<(), ConsentError> {
        self.by_subject(person)?;
        match (self.state, self.state_name(now)) {
            (_, "expired") => Err(ConsentError::Expired),
            (ConsentState::Given { .. }, _) => {
                self.state = ConsentState::Revoked { at: now };
                Ok(())
            }
            (_, state) => Err(ConsentError::Transition(state, "revoked")),
        }
    }

    /// Where it stands for a harvest about `subject` for `requestor` of `dataset` for
    /// `purpose`, as the requirements see it: given (until when; past that, the
    /// requirements call it expired), revoked, or none — a consent never given
    /// (pending, declined, for someone else) allows nothing.
    pub fn standing(
        &self,
        subject: &str,
        requestor: &str,
        dataset: &str,
        purpose: &str,
    ) -> crate::requirement::Consent {
        use crate::requirement::Consent as C;
        let covers = self.from == subject
            && self.to == requestor
            && self
                .rights
                .iter()
                .any(|r| r.dataset == dataset && r.purpose == purpose);
        match self.state {
            ConsentState::Given { .. } if covers => C::Given {
                valid_to: self.valid_to,
            },
            ConsentState::Revoked { .. } if covers => C::Revoked,
            _ => C::None,
        }
    }

    /// The `authorization_details` entry a token carries for it (given only).
    pub fn detail(&self) -> Option<AuthorizationDetail> {
        let ConsentState::Given { at } = self.state else {
            return None;
        };
        Some(AuthorizationDetail {
            kind: CONSENT_TYPE.into(),
            id: self.id.clone(),
            from: format!("{PERSON_URN}{}", self.from),
            to: self.to.clone(),
            consented: at,
            valid_to: self.valid_to,
            consent_rights: self.rights.clone(),
        })
    }
}

/// A consent in an access token's `authorization_details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationDetail {
    /// Always [`CONSENT_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The consent's id.
    pub id: String,
    /// The subject, [`PERSON_URN`] and their number.
    pub from: String,
    /// The requestor.
    pub to: String,
    /// When it was given, Unix seconds.
    pub consented: i64,
    /// Until when, Unix seconds.
    pub valid_to: i64,
    /// What it allows.
    pub consent_rights: Vec<ConsentRight>,
}

impl AuthorizationDetail {
    /// Checks a token's consent entry against the broker's own record of the consent
    /// and a harvest: the same consent, given, current, for this subject, requestor,
    /// dataset and purpose. A token minted before a revocation fails here, because
    /// the record says revoked.
    pub fn check(
        &self,
        record: &Consent,
        subject: &str,
        requestor: &str,
        dataset: &str,
        purpose: &str,
        now: i64,
    ) -> Result<(), String> {
        if self.kind != CONSENT_TYPE {
            return Err(format!(
                "the entry is of type {}, not {CONSENT_TYPE}",
                self.kind
            ));
        }
        let Some(expected) = record.detail() else {
            return Err(format!(
                "consent {} is {}",
                record.id,
                record.state_name(now)
            ));
        };
        if now >= record.valid_to {
            return Err(format!("consent {} has expired", record.id));
        }
        if *self != expected {
            return Err(format!(
                "the token's consent {} does not match the consent as given",
                self.id
            ));
        }
        if self.from != format!("{PERSON_URN}{subject}") {
            return Err("the consent is about another person".into());
        }
        if self.to != requestor {
            return Err("the consent was given to another requestor".into());
        }
        if !self
            .consent_rights
            .iter()
            .any(|r| r.dataset == dataset && r.purpose == purpose)
        {
            return Err(format!(
                "the consent does not cover {dataset} for {purpose}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requirement::Consent as Standing;

    const NOW: i64 = 1_796_601_600;
    const PERSON: &str = "01017012345";
    const OTHER: &str = "02028012345";
    const TO: &str = "DEV/MUN/30000003";
    const DATASET: &str = "person-health";
    const PURPOSE: &str = "housing-benefit";

    fn rights() -> Vec<ConsentRight> {
        vec![ConsentRight {
            dataset: DATASET.into(),
            purpose: PURPOSE.into(),
        }]
    }

    fn asked() -> Consent {
        Consent::request(
            "c-1".into(),
            PERSON,
            TO,
            rights(),
            NOW + 7 * 86_400,
            "We need your health data to decide your housing benefit, case 17/2026.",
            Some("https://kommune.example/case/17".into()),
            NOW,
            30,
        )
        .unwrap()
    }

    #[test]
    fn a_consent_is_given_used_and_revoked_by_its_subject_only() {
        let mut c = asked();
        assert_eq!(c.standing(PERSON, TO, DATASET, PURPOSE), Standing::None);
        assert_eq!(c.detail(), None);
        assert_eq!(
            c.answer(OTHER, true, NOW + 1),
            Err(ConsentError::NotTheSubject)
        );
        c.answer(PERSON, true, NOW + 1).unwrap();
        let given = Standing::Given {
            valid_to: NOW + 7 * 86_400,
        };
        assert_eq!(c.standing(PERSON, TO, DATASET, PURPOSE), given);
        // Nothing else is covered: another purpose, dataset, person or requestor.
        for (subject, requestor, dataset, purpose) in [
            (PERSON, TO, DATASET, "marketing"),
            (PERSON, TO, "person-income", PURPOSE),
            (OTHER, TO, DATASET, PURPOSE),
            (PERSON, "DEV/MUN/30000004", DATASET, PURPOSE),
        ] {
            assert_eq!(
                c.standing(subject, requestor, dataset, purpose),
                Standing::None,
                "{subject} {requestor} {dataset} {purpose}"
            );
        }
        // The token's entry checks against the record.
        let detail = c.detail().unwrap();
        assert_eq!(detail.from, "urn:veksel:person:01017012345");
        assert_eq!(
            detail.check(&c, PERSON, TO, DATASET, PURPOSE, NOW + 2),
            Ok(())
        );
        let wire = serde_json::to_value(&detail).unwrap();
        assert_eq!(wire["type"], "urn:veksel:consent");
        assert_eq!(wire["consentRights"][0]["dataset"], DATASET);
        for (subject, requestor, dataset, says) in [
            (OTHER, TO, DATASET, "another person"),
            (PERSON, "DEV/MUN/30000004", DATASET, "another requestor"),
            (PERSON, TO, "person-income", "does not cover"),
        ] {
            let e = detail
                .check(&c, subject, requestor, dataset, PURPOSE, NOW + 2)
                .unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        // An entry widened by whoever minted the token does not match the record.
        let mut widened = detail.clone();
        widened.valid_to += 365 * 86_400;
        let e = widened
            .check(&c, PERSON, TO, DATASET, PURPOSE, NOW + 2)
            .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        // Someone else cannot revoke; the subject can, once, and a token minted
        // before fails from then on.
        assert_eq!(c.revoke(OTHER, NOW + 3), Err(ConsentError::NotTheSubject));
        c.revoke(PERSON, NOW + 3).unwrap();
        assert_eq!(c.standing(PERSON, TO, DATASET, PURPOSE), Standing::Revoked);
        let e = detail
            .check(&c, PERSON, TO, DATASET, PURPOSE, NOW + 4)
            .unwrap_err();
        assert!(e.contains("revoked"), "{e}");
        assert_eq!(
            c.revoke(PERSON, NOW + 5),
            Err(ConsentError::Transition("revoked", "revoked"))
        );
        assert_eq!(
            c.answer(PERSON, true, NOW + 5),
            Err(ConsentError::Transition("revoked", "given"))
        );
    }

    #[test]
    fn declined_pending_and_expired_consents_allow_nothing() {
        let mut c = asked();
        c.answer(PERSON, false, NOW + 1).unwrap();
        assert_eq!(c.standing(PERSON, TO, DATASET, PURPOSE), Standing::None);
        assert_eq!(
            c.revoke(PERSON, NOW + 2),
            Err(ConsentError::Transition("declined", "revoked"))
        );
        // A consent never answered stands as none, also past its validity.
        assert_eq!(
            asked().standing(PERSON, TO, DATASET, PURPOSE),
            Standing::None
        );
        let mut late = asked();
        assert_eq!(
            late.answer(PERSON, true, NOW + 7 * 86_400),
            Err(ConsentError::Expired)
        );
        // A given one past its validity: the requirements call it expired.
        let mut given = asked();
        given.answer(PERSON, true, NOW + 1).unwrap();
        let after = NOW + 7 * 86_400;
        assert_eq!(
            given.standing(PERSON, TO, DATASET, PURPOSE),
            Standing::Given { valid_to: after }
        );
        let e = given
            .detail()
            .unwrap()
            .check(&given, PERSON, TO, DATASET, PURPOSE, after)
            .unwrap_err();
        assert!(e.contains("expired"), "{e}");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let req = |from: &str,
                   to: &str,
                   rights: Vec<ConsentRight>,
                   valid_to: i64,
                   message: &str,
                   redirect: Option<&str>| {
            Consent::request(
                "c".into(),
                from,
                to,
                rights,
                valid_to,
                message,
                redirect.map(str::to_owned),
                NOW,
                30,
            )
        };
        let ok_to = NOW + 86_400;
        assert!(req(PERSON, TO, rights(), ok_to, "why", None).is_ok());
        assert!(
            req(
                PERSON,
                TO,
                rights(),
                ok_to,
                "why",
                Some("http://127.0.0.1:9/done")
            )
            .is_ok()
        );
        for (from, to, r, valid_to, message, redirect, says) in [
            ("someone", TO, rights(), ok_to, "why", None, "person number"),
            (PERSON, "nobody", rights(), ok_to, "why", None, "member id"),
            (PERSON, TO, vec![], ok_to, "why", None, "datasets"),
            (PERSON, TO, rights(), NOW, "why", None, "validTo"),
            (
                PERSON,
                TO,
                rights(),
                NOW + 31 * 86_400,
                "why",
                None,
                "validTo",
            ),
            (PERSON, TO, rights(), ok_to, "  ", None, "message"),
            (
                PERSON,
                TO,
                rights(),
                ok_to,
                "why",
                Some("http://evil.example/x"),
                "redirectUrl",
            ),
            (
                PERSON,
                TO,
                rights(),
                ok_to,
                "why",
                Some("javascript:alert(1)"),
                "redirectUrl",
            ),
            (
                PERSON,
                TO,
                rights(),
                ok_to,
                "why",
                Some("http://127.0.0.1:80@evil.example/"),
                "redirectUrl",
            ),
        ] {
            let e = req(from, to, r, valid_to, message, redirect).unwrap_err();
            assert!(e.to_string().contains(says), "{says}: {e}");
        }
        assert!(
            req(
                PERSON,
                TO,
                rights(),
                ok_to,
                &"x".repeat(MAX_MESSAGE + 1),
                None
            )
            .is_err()
        );
    }
}
