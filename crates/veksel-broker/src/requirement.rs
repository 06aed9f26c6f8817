//! Who may have a dataset, as data: the requirements data.altinn.no declares in its
//! plugins' code (scopes, consent, party types, party relations, legal basis,
//! references, allow-lists), written into the dataset's file instead, each with its
//! `failure_action` (deny the request, or skip the dataset) and the service contexts
//! it applies in.
//!
//! In a definition:
//!
//! ```toml
//! [[requirements]]
//! type = "party-type"
//! party = "requestor"
//! allowed = ["public-agency"]
//! failure_action = "skip"
//! ```

use crate::error::{BrokerError, ErrorCode};
use serde::{Deserialize, Serialize};

/// One requirement of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirement {
    /// What must hold.
    #[serde(flatten)]
    pub rule: Rule,
    /// What happens when it does not.
    #[serde(default)]
    pub failure_action: FailureAction,
    /// The service contexts it applies in; none: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_contexts: Vec<String>,
}

/// What must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Rule {
    /// The consumer's access token holds every one of these scopes.
    Scope {
        /// The scopes.
        scopes: Vec<String>,
    },
    /// The subject has consented, for at most `period_days` at a time.
    Consent {
        /// Longest a consent may last, days.
        period_days: u32,
    },
    /// A party is of one of the allowed kinds.
    PartyType {
        /// Which party.
        party: PartyRole,
        /// The kinds it may be.
        allowed: Vec<PartyKind>,
    },
    /// Two parties are, or are not, the same.
    PartyRelation {
        /// The relation.
        relation: Relation,
    },
    /// A legal basis of one of these kinds comes with the request.
    LegalBasis {
        /// The kinds: `espd`, `cpv`, `law`, …
        kinds: Vec<String>,
    },
    /// A reference of the request matches a pattern (a whole-string regular
    /// expression).
    Reference {
        /// Which reference.
        reference: ReferenceKind,
        /// The pattern.
        pattern: String,
    },
    /// A party is one of these (organisation or person numbers).
    AllowList {
        /// Which party.
        party: PartyRole,
        /// Who is allowed.
        allowed: Vec<String>,
    },
}

/// What a failed requirement does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// The request is refused.
    #[default]
    Deny,
    /// The dataset is left out of the accreditation (data.altinn.no's
    /// `skippedEvidenceCodes`); the others go on.
    Skip,
}

/// A party of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartyRole {
    /// Whom the data is about.
    Subject,
    /// On whose behalf it is asked for.
    Requestor,
    /// Who is authenticated: the access token's consumer.
    Owner,
}

/// What kind of party someone is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartyKind {
    /// A person.
    Person,
    /// A public agency (a member of the network's government class).
    PublicAgency,
    /// A private enterprise.
    Enterprise,
    /// A party outside the national registers.
    Foreign,
}

/// A relation between two parties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    /// The requestor is the authenticated consumer.
    RequestorIsOwner,
    /// The subject is the authenticated consumer (asking about itself).
    SubjectIsOwner,
    /// The requestor asks about itself.
    RequestorIsSubject,
    /// The requestor is not the subject.
    RequestorIsNotSubject,
}

/// A reference a request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceKind {
    /// The consent's reference (a case number the subject sees).
    ConsentReference,
    /// The consumer's own reference.
    ExternalReference,
}

/// A party as the broker knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Its number.
    pub id: String,
    /// Its kind.
    pub kind: PartyKind,
}

/// A legal basis given with a request (data.altinn.no's `legalBasisList` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalBasis {
    /// Its id in the request.
    pub id: String,
    /// Its kind: `espd`, `cpv`, `law`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Its content.
    pub content: String,
}

/// Where the subject's consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// None was given.
    None,
    /// Given, until Unix seconds.
    Given {
        /// Until when.
        valid_to: i64,
    },
    /// Revoked by the subject.
    Revoked,
}

/// What the requirements are checked against.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The service context named, if any.
    pub service_context: Option<&'a str>,
    /// The access token's scopes.
    pub scopes: &'a [&'a str],
    /// The authenticated consumer.
    pub owner: &'a Party,
    /// On whose behalf.
    pub requestor: &'a Party,
    /// About whom.
    pub subject: &'a Party,
    /// The legal basis given.
    pub legal_basis: Option<&'a LegalBasis>,
    /// The subject's consent.
    pub consent: Consent,
    /// The consent's reference.
    pub consent_reference: Option<&'a str>,
    /// The consumer's reference.
    pub external_reference: Option<&'a str>,
}

/// The outcome for a dataset whose requirements did not deny it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every requirement holds.
    Allowed,
    /// A requirement with `failure_action = "skip"` does not: the dataset is left
    /// out, for this reason.
    Skipped(String),
}

/// Longest pattern of a reference requirement.
const MAX_PATTERN: usize = 500;

fn pattern(p: &str) -> Result<regex::Regex, String> {
    if p.len() > MAX_PATTERN {
        return Err(format!("a pattern has at most {MAX_PATTERN} characters"));
    }
    regex::RegexBuilder::new(&format!("^(?:{p})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("pattern {p:?}: {e}"))
}

impl Requirement {
    /// Checks the requirement's own shape.
    pub fn validate(&self) -> Result<(), String> {
        match &self.rule {
            Rule::Scope { scopes } => {
                if scopes.is_empty() || scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                    return Err("scopes: one or more, without spaces".into());
                }
            }
            Rule::Consent { period_days } => {
                if !(1..=3650).contains(period_days) {
                    return Err("period_days: 1 to 3650".into());
                }
            }
            Rule::PartyType { allowed, .. } => {
                if allowed.is_empty() {
                    return Err("allowed: at least one kind".into());
                }
            }
            Rule::PartyRelation { .. } => {}
            Rule::LegalBasis { kinds } => {
                if kinds.is_empty() {
                    return Err("kinds: at least one".into());
                }
            }
            Rule::Reference { pattern: p, .. } => {
                pattern(p)?;
            }
            Rule::AllowList { allowed, .. } => {
                if allowed.is_empty() {
                    return Err("allowed: at least one party".into());
                }
            }
        }
        Ok(())
    }

    fn applies(&self, service_context: Option<&str>) -> bool {
        self.service_contexts.is_empty()
            || service_context.is_some_and(|c| self.service_contexts.iter().any(|s| s == c))
    }

    /// Whether the requirement holds for `r` at `now` (Unix seconds); if not, the
    /// refusal.
    fn check(&self, r: &Request<'_>, now: i64) -> Result<(), BrokerError> {
        let refuse = |code, message: String| Err(BrokerError::new(code, message));
        let party = |role: PartyRole| match role {
            PartyRole::Subject => r.subject,
            PartyRole::Requestor => r.requestor,
            PartyRole::Owner => r.owner,
        };
        match &self.rule {
            Rule::Scope { scopes } => match scopes.iter().find(|s| !r.scopes.contains(&s.as_str()))
            {
                None => Ok(()),
                Some(missing) => refuse(
                    ErrorCode::AuthorizationFailed,
                    format!("the access token lacks the scope {missing}"),
                ),
            },
            Rule::Consent { .. } => match r.consent {
                Consent::Given { valid_to } if valid_to > now => Ok(()),
                Consent::Given { .. } => refuse(
                    ErrorCode::ExpiredConsent,
                    "the subject's consent has expired".into(),
                ),
                Consent::Revoked => refuse(
                    ErrorCode::DeletedConsent,
                    "the subject has revoked the consent".into(),
                ),
                Consent::None => refuse(
                    ErrorCode::RequiresConsent,
                    "the dataset needs the subject's consent".into(),
                ),
            },
            Rule::PartyType {
                party: role,
                allowed,
            } => {
                let p = party(*role);
                if allowed.contains(&p.kind) {
                    Ok(())
                } else {
                    refuse(
                        ErrorCode::AuthorizationFailed,
                        format!(
                            "the {} must be {}",
                            role_name(*role),
                            allowed
                                .iter()
                                .map(|k| kind_name(*k))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    )
                }
            }
            Rule::PartyRelation { relation } => {
                let holds = match relation {
                    Relation::RequestorIsOwner => r.requestor.id == r.owner.id,
                    Relation::SubjectIsOwner => r.subject.id == r.owner.id,
                    Relation::RequestorIsSubject => r.requestor.id == r.subject.id,
                    Relation::RequestorIsNotSubject => r.requestor.id != r.subject.id,
                };
                if holds {
                    Ok(())
                } else {
                    refuse(
                        ErrorCode::AuthorizationFailed,
                        format!("the parties do not meet {relation:?}"),
                    )
                }
            }
            Rule::LegalBasis { kinds } => match r.legal_basis {
                Some(b) if kinds.contains(&b.kind) && !b.content.trim().is_empty() => Ok(()),
                Some(b) => refuse(
                    ErrorCode::InvalidLegalBasis,
                    format!(
                        "a legal basis of kind {} is not accepted: {}",
                        b.kind,
                        kinds.join(", ")
                    ),
                ),
                None => refuse(
                    ErrorCode::InvalidLegalBasis,
                    format!("a legal basis is needed: {}", kinds.join(", ")),
                ),
            },
            Rule::Reference {
                reference,
                pattern: p,
            } => {
                let given = match reference {
                    ReferenceKind::ConsentReference => r.consent_reference,
                    ReferenceKind::ExternalReference => r.external_reference,
                };
                let matches = given.is_some_and(|g| pattern(p).is_ok_and(|re| re.is_match(g)));
                if matches {
                    Ok(())
                } else {
                    refuse(
                        ErrorCode::InvalidAuthorizationRequest,
                        format!("the {reference:?} must match {p}"),
                    )
                }
            }
            Rule::AllowList {
                party: role,
                allowed,
            } => {
                if allowed.contains(&party(*role).id) {
                    Ok(())
                } else {
                    refuse(
                        ErrorCode::AuthorizationFailed,
                        format!(
                            "the {} is not on the dataset's allow-list",
                            role_name(*role)
                        ),
                    )
                }
            }
        }
    }
}

fn role_name(role: PartyRole) -> &'static str {
    match role {
        PartyRole::Subject => "subject",
        PartyRole::Requestor => "requestor",
        PartyRole::Owner => "authenticated consumer",
    }
}

fn kind_name(kind: PartyKind) -> &'static str {
    match kind {
        PartyKind::Person => "a person",
        PartyKind::PublicAgency => "a public agency",
        PartyKind::Enterprise => "an enterprise",
        PartyKind::Foreign => "a foreign party",
    }
}

/// Checks a dataset's requirements for a request at `now` (Unix seconds): the first
/// failing one with `deny` refuses it; a failing one with `skip` leaves the dataset
/// out. Requirements of other service contexts do not apply.
pub fn evaluate(
    requirements: &[Requirement],
    r: &Request<'_>,
    now: i64,
) -> Result<Verdict, BrokerError> {
    let mut skipped = None;
    for req in requirements.iter().filter(|q| q.applies(r.service_context)) {
        if let Err(e) = req.check(r, now) {
            match req.failure_action {
                FailureAction::Deny => return Err(e),
                FailureAction::Skip => {
                    skipped.get_or_insert(e.description);
                }
            }
        }
    }
    Ok(skipped.map_or(Verdict::Allowed, Verdict::Skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(toml_text: &str) -> Vec<Requirement> {
        #[derive(Deserialize)]
        struct File {
            requirements: Vec<Requirement>,
        }
        let f: File = toml::from_str(toml_text).unwrap();
        for r in &f.requirements {
            r.validate().unwrap();
        }
        f.requirements
    }

    fn party(id: &str, kind: PartyKind) -> Party {
        Party {
            id: id.into(),
            kind,
        }
    }

    struct Parties {
        owner: Party,
        requestor: Party,
        subject: Party,
    }

    fn parties() -> Parties {
        Parties {
            owner: party("30000003", PartyKind::PublicAgency),
            requestor: party("30000003", PartyKind::PublicAgency),
            subject: party("01017012345", PartyKind::Person),
        }
    }

    fn request<'a>(p: &'a Parties, scopes: &'a [&'a str]) -> Request<'a> {
        Request {
            service_context: None,
            scopes,
            owner: &p.owner,
            requestor: &p.requestor,
            subject: &p.subject,
            legal_basis: None,
            consent: Consent::None,
            consent_reference: None,
            external_reference: None,
        }
    }

    const ALL: &str = r#"
[[requirements]]
type = "scope"
scopes = ["veksel:person-income"]

[[requirements]]
type = "party-type"
party = "requestor"
allowed = ["public-agency"]

[[requirements]]
type = "party-relation"
relation = "requestor-is-not-subject"

[[requirements]]
type = "legal-basis"
kinds = ["law"]
service_contexts = ["eBevis"]

[[requirements]]
type = "reference"
reference = "external-reference"
pattern = "[0-9]{2}/[0-9]{4}"
failure_action = "skip"

[[requirements]]
type = "allow-list"
party = "owner"
allowed = ["30000003", "30000004"]
"#;

    #[test]
    fn each_requirement_refuses_with_its_code_and_skip_leaves_the_dataset_out() {
        let reqs = read(ALL);
        let p = parties();
        let scopes = ["veksel:person-income"];
        let mut r = request(&p, &scopes);
        r.external_reference = Some("17/2026");
        assert_eq!(evaluate(&reqs, &r, 0), Ok(Verdict::Allowed));

        // The scope missing.
        let none: [&str; 0] = [];
        let e = evaluate(&reqs, &request(&p, &none), 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthorizationFailed);
        assert!(e.description.contains("veksel:person-income"));
        // A prefix of the scope is not the scope.
        let prefix = ["veksel:person"];
        assert!(evaluate(&reqs, &request(&p, &prefix), 0).is_err());

        // The requestor an enterprise.
        let mut q = parties();
        q.requestor.kind = PartyKind::Enterprise;
        let mut r2 = request(&q, &scopes);
        r2.external_reference = Some("17/2026");
        let e = evaluate(&reqs, &r2, 0).unwrap_err();
        assert!(
            e.description.contains("requestor must be a public agency"),
            "{e}"
        );

        // The requestor asking about itself.
        let mut q = parties();
        q.subject = q.requestor.clone();
        let e = evaluate(&reqs, &request(&q, &scopes), 0).unwrap_err();
        assert!(e.description.contains("RequestorIsNotSubject"), "{e}");

        // The legal basis applies in eBevis only.
        let mut r3 = request(&p, &scopes);
        r3.service_context = Some("eBevis");
        r3.external_reference = Some("17/2026");
        let e = evaluate(&reqs, &r3, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidLegalBasis);
        let cpv = LegalBasis {
            id: "1".into(),
            kind: "cpv".into(),
            content: "45000000".into(),
        };
        r3.legal_basis = Some(&cpv);
        let e = evaluate(&reqs, &r3, 0).unwrap_err();
        assert!(e.description.contains("kind cpv is not accepted"), "{e}");
        let law = LegalBasis {
            id: "1".into(),
            kind: "law".into(),
            content: "Housing Benefit Act § 7".into(),
        };
        r3.legal_basis = Some(&law);
        assert_eq!(evaluate(&reqs, &r3, 0), Ok(Verdict::Allowed));

        // A reference that does not match is skipped, not denied; nor does a pattern
        // match part of a reference.
        for bad in [None, Some("x17/2026"), Some("17/20266")] {
            let mut r4 = request(&p, &scopes);
            r4.external_reference = bad;
            assert!(
                matches!(evaluate(&reqs, &r4, 0), Ok(Verdict::Skipped(ref why)) if why.contains("must match")),
                "{bad:?}"
            );
        }

        // An owner off the allow-list.
        let mut q = parties();
        q.owner.id = "30000009".into();
        q.requestor.id = "30000009".into();
        let mut r5 = request(&q, &scopes);
        r5.external_reference = Some("17/2026");
        let e = evaluate(&reqs, &r5, 0).unwrap_err();
        assert!(e.description.contains("allow-list"), "{e}");
    }

    #[test]
    fn consent_must_be_given_and_current() {
        let reqs = read("[[requirements]]\ntype = \"consent\"\nperiod_days = 90\n");
        let p = parties();
        let none: [&str; 0] = [];
        let mut r = request(&p, &none);
        let code = |r: &Request<'_>| evaluate(&reqs, r, 1000).map_err(|e| e.code);
        assert_eq!(code(&r), Err(ErrorCode::RequiresConsent));
        r.consent = Consent::Given { valid_to: 1000 };
        assert_eq!(code(&r), Err(ErrorCode::ExpiredConsent));
        r.consent = Consent::Revoked;
        assert_eq!(code(&r), Err(ErrorCode::DeletedConsent));
        r.consent = Consent::Given { valid_to: 1001 };
        assert_eq!(code(&r), Ok(Verdict::Allowed));
    }

    #[test]
    fn malformed_requirements_are_refused_when_read() {
        #[derive(Debug, Deserialize)]
        struct File {
            #[allow(dead_code)]
            requirements: Vec<Requirement>,
        }
        for (text, says) in [
            ("type = \"scope\"\nscopes = [\"a\"]\ncolour = 1", "colour"),
            ("type = \"telepathy\"", "telepathy"),
            (
                "type = \"scope\"\nscopes = [\"a\"]\nfailure_action = \"shrug\"",
                "shrug",
            ),
        ] {
            let e = toml::from_str::<File>(&format!("[[requirements]]\n{text}\n")).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        for (rule, says) in [
            (
                Rule::Scope {
                    scopes: vec!["a b".into()],
                },
                "without spaces",
            ),
            (Rule::Consent { period_days: 0 }, "period_days"),
            (
                Rule::Reference {
                    reference: ReferenceKind::ExternalReference,
                    pattern: "(".into(),
                },
                "pattern",
            ),
            (
                Rule::Reference {
                    reference: ReferenceKind::ExternalReference,
                    pattern: "a".repeat(MAX_PATTERN + 1),
                },
                "at most",
            ),
            (
                Rule::AllowList {
                    party: PartyRole::Owner,
                    allowed: vec![],
                },
                "allowed",
            ),
        ] {
            let r = Requirement {
                rule,
                failure_action: FailureAction::Deny,
                service_contexts: vec![],
            };
            assert!(r.validate().unwrap_err().contains(says), "{says}");
        }
    }
}
