//! Access rights of a provider: who may call which service, and which endpoints.
//!
//! Deny by default: a call is allowed only when some rule names the client (directly,
//! through a global group or through a local group), the service, the method and a
//! path pattern that matches. Patterns are matched against the percent-decoded path
//! segments that [`crate::r1::parse_target`] has already cleaned of dot segments and
//! encoded slashes, so a path can not be dressed up to match a rule it should not.

use serde::{Deserialize, Serialize};
use veksel_id::{ClientId, GlobalGroupId};

/// Who a rule grants access to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Subject {
    /// One member or subsystem.
    Client(ClientId),
    /// Every member of a global group.
    GlobalGroup(GlobalGroupId),
    /// Every member of a local group of the provider subsystem (by group code).
    LocalGroup(String),
}

/// An endpoint: a method (or `*`) and a path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// HTTP method in upper case, or `*` for any.
    pub method: String,
    /// Path pattern: `/`-separated segments where `*` matches one segment, `**`
    /// matches any number of segments, and a segment may contain `*` as a wildcard
    /// for a run of characters (`*.json`). `/**` is the whole service.
    pub path: String,
}

impl Endpoint {
    /// The whole service: any method, any path.
    pub fn any() -> Self {
        Self {
            method: "*".into(),
            path: "/**".into(),
        }
    }

    /// True if the method and decoded path segments match.
    pub fn matches(&self, method: &str, segments: &[String]) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && path_matches(&self.path, segments)
    }

    /// True if every request this endpoint matches is also matched by `other`,
    /// judged by pattern text (used to list allowed endpoints).
    pub fn covered_by(&self, other: &Endpoint) -> bool {
        let method_ok = other.method == "*" || other.method.eq_ignore_ascii_case(&self.method);
        let segs: Vec<String> = pattern_segments(&self.path).map(str::to_owned).collect();
        method_ok && path_matches(&other.path, &segs)
    }
}

fn pattern_segments(pattern: &str) -> impl Iterator<Item = &str> {
    pattern.split('/').filter(|s| !s.is_empty())
}

/// Matches a path pattern against decoded segments.
pub fn path_matches(pattern: &str, segments: &[String]) -> bool {
    let pat: Vec<&str> = pattern_segments(pattern).collect();
    match_from(&pat, segments)
}

fn match_from(pat: &[&str], segs: &[String]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|skip| match_from(rest, &segs[skip..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => glob(p, s) && match_from(rest, srest),
            None => false,
        },
    }
}

/// `*` inside one segment matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// One access right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    /// Who.
    pub subject: Subject,
    /// Which service of the provider subsystem.
    pub service_code: String,
    /// Which endpoints; [`Endpoint::any`] for the whole service.
    pub endpoint: Endpoint,
}

/// The facts about a caller that rules are matched against.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    /// The client as named in the request.
    pub client: &'a ClientId,
    /// Global groups it belongs to (from the global configuration).
    pub global_groups: &'a [GlobalGroupId],
    /// Local groups of the provider subsystem it belongs to.
    pub local_groups: &'a [String],
}

impl Caller<'_> {
    fn is(&self, subject: &Subject) -> bool {
        match subject {
            Subject::Client(c) => c == self.client,
            Subject::GlobalGroup(g) => self.global_groups.contains(g),
            Subject::LocalGroup(code) => self.local_groups.iter().any(|l| l == code),
        }
    }
}

/// Deny-by-default decision for one call.
pub fn is_allowed(
    rules: &[AccessRule],
    caller: &Caller<'_>,
    service_code: &str,
    method: &str,
    segments: &[String],
) -> bool {
    rules.iter().any(|r| {
        r.service_code == service_code
            && caller.is(&r.subject)
            && r.endpoint.matches(method, segments)
    })
}

/// The rules that apply to a caller, for `allowedMethods`.
pub fn rules_for<'r>(rules: &'r [AccessRule], caller: &Caller<'_>) -> Vec<&'r AccessRule> {
    rules.iter().filter(|r| caller.is(&r.subject)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        crate::r1::decoded_segments(p)
    }

    #[test]
    fn patterns() {
        assert!(path_matches("/**", &segs("")));
        assert!(path_matches("/**", &segs("/a/b")));
        assert!(path_matches("/persons/*", &segs("/persons/42")));
        assert!(!path_matches("/persons/*", &segs("/persons/42/x")));
        assert!(!path_matches("/persons/*", &segs("/persons")));
        assert!(path_matches("/persons/**", &segs("/persons")));
        assert!(path_matches("/a/**/z", &segs("/a/b/c/z")));
        assert!(!path_matches("/a/**/z", &segs("/a/b/c")));
        assert!(path_matches("/files/*.json", &segs("/files/x.json")));
        assert!(!path_matches("/files/*.json", &segs("/files/x.xml")));
        assert!(path_matches("/x/a*b*c", &segs("/x/aXbYc")));
        assert!(!path_matches("/x/a*b*c", &segs("/x/acb")));
        assert!(path_matches("/", &segs("/")));
        // Encoded characters are compared decoded.
        assert!(path_matches("/a b", &segs("/a%20b")));
    }

    #[test]
    fn deny_by_default_and_subjects() {
        let client: ClientId = "GL/MUN/3/case".parse().unwrap();
        let group: GlobalGroupId = "GL/municipalities".parse().unwrap();
        let rules = vec![
            AccessRule {
                subject: Subject::Client(client.clone()),
                service_code: "persons".into(),
                endpoint: Endpoint {
                    method: "GET".into(),
                    path: "/persons/*".into(),
                },
            },
            AccessRule {
                subject: Subject::GlobalGroup(group.clone()),
                service_code: "echo".into(),
                endpoint: Endpoint::any(),
            },
            AccessRule {
                subject: Subject::LocalGroup("auditors".into()),
                service_code: "audit".into(),
                endpoint: Endpoint::any(),
            },
        ];
        let none: Vec<GlobalGroupId> = vec![];
        let caller = Caller {
            client: &client,
            global_groups: &none,
            local_groups: &[],
        };
        assert!(is_allowed(
            &rules,
            &caller,
            "persons",
            "GET",
            &segs("/persons/1")
        ));
        assert!(is_allowed(
            &rules,
            &caller,
            "persons",
            "get",
            &segs("/persons/1")
        ));
        assert!(!is_allowed(
            &rules,
            &caller,
            "persons",
            "DELETE",
            &segs("/persons/1")
        ));
        assert!(!is_allowed(
            &rules,
            &caller,
            "persons",
            "GET",
            &segs("/persons")
        ));
        assert!(!is_allowed(&rules, &caller, "echo", "GET", &segs("/")));
        assert!(!is_allowed(&rules, &caller, "audit", "GET", &segs("/")));
        let groups = vec![group];
        let locals = vec!["auditors".to_owned()];
        let caller = Caller {
            client: &client,
            global_groups: &groups,
            local_groups: &locals,
        };
        assert!(is_allowed(&rules, &caller, "echo", "POST", &segs("/x")));
        assert!(is_allowed(&rules, &caller, "audit", "GET", &segs("/")));
        assert_eq!(rules_for(&rules, &caller).len(), 3);
        assert!(!is_allowed(&[], &caller, "echo", "GET", &segs("/")));
    }

    #[test]
    fn endpoint_cover() {
        let get_one = Endpoint {
            method: "GET".into(),
            path: "/persons/*".into(),
        };
        assert!(get_one.covered_by(&Endpoint::any()));
        assert!(get_one.covered_by(&get_one));
        assert!(!Endpoint::any().covered_by(&get_one));
    }
}
