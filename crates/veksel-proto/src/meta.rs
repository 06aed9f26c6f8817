//! Response bodies of X-Road's metaservices, in the JSON shape X-Road's security
//! server produces (snake_case keys, `null` fields left out).

use serde::{Deserialize, Serialize};

/// `id` of an entry in `listClients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XRoadIdentifier {
    /// `MEMBER` or `SUBSYSTEM`.
    pub object_type: String,
    /// Instance.
    pub xroad_instance: String,
    /// Member class.
    pub member_class: String,
    /// Member code.
    pub member_code: String,
    /// Subsystem code, for subsystems.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subsystem_code: Option<String>,
}

/// One entry of `listClients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// Identifier.
    pub id: XRoadIdentifier,
    /// Member name.
    pub name: String,
    /// Subsystem name, for subsystems.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subsystem_name: Option<String>,
}

/// `GET /listClients` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientList {
    /// Every member and subsystem of the instance.
    pub member: Vec<ClientEntry>,
}

/// An endpoint in `listMethods` / `allowedMethods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointEntry {
    /// HTTP method or `*`.
    pub method: String,
    /// Path pattern.
    pub path: String,
}

/// One service in `listMethods` / `allowedMethods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Always `SERVICE`.
    pub object_type: String,
    /// Instance.
    pub xroad_instance: String,
    /// Member class.
    pub member_class: String,
    /// Member code.
    pub member_code: String,
    /// Subsystem code.
    pub subsystem_code: String,
    /// Service code.
    pub service_code: String,
    /// `REST`, or `OPENAPI` when the service has an OpenAPI description.
    pub service_type: String,
    /// Endpoints.
    pub endpoint_list: Vec<EndpointEntry>,
}

/// `listMethods` / `allowedMethods` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    /// Services.
    pub service: Vec<ServiceEntry>,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

impl ClientList {
    /// The XML form X-Road serves when the client does not accept JSON.
    pub fn to_xml(&self) -> String {
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xrd:clientList xmlns:xrd=\"http://x-road.eu/xsd/xroad.xsd\" xmlns:id=\"http://x-road.eu/xsd/identifiers\">",
        );
        for m in &self.member {
            s.push_str(&format!(
                "<xrd:member><xrd:id id:objectType=\"{}\"><id:xRoadInstance>{}</id:xRoadInstance><id:memberClass>{}</id:memberClass><id:memberCode>{}</id:memberCode>",
                xml_escape(&m.id.object_type),
                xml_escape(&m.id.xroad_instance),
                xml_escape(&m.id.member_class),
                xml_escape(&m.id.member_code)
            ));
            if let Some(sub) = &m.id.subsystem_code {
                s.push_str(&format!(
                    "<id:subsystemCode>{}</id:subsystemCode>",
                    xml_escape(sub)
                ));
            }
            s.push_str(&format!(
                "</xrd:id><xrd:name>{}</xrd:name>",
                xml_escape(&m.name)
            ));
            if let Some(n) = &m.subsystem_name {
                s.push_str(&format!(
                    "<xrd:subsystemName>{}</xrd:subsystemName>",
                    xml_escape(n)
                ));
            }
            s.push_str("</xrd:member>");
        }
        s.push_str("</xrd:clientList>");
        s
    }
}

/// The body of a fault raised by a gateway: `{type, message, detail}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Fault type, e.g. `Server.ServerProxy.AccessDenied`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human readable message.
    pub message: String,
    /// Correlation id, to find the matching log line.
    pub detail: String,
}

/// Which representation of an error body to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `application/json` (the default).
    Json,
    /// `application/xml`.
    ApplicationXml,
    /// `text/xml`.
    TextXml,
}

impl ErrorFormat {
    /// X-Road's rule: the first XML type named in `Accept` wins, otherwise JSON.
    pub fn from_accept(accept: Option<&str>) -> Self {
        for item in accept.unwrap_or_default().split(',') {
            let media = item
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                "application/xml" => return Self::ApplicationXml,
                "text/xml" | "text/*" => return Self::TextXml,
                _ => {}
            }
        }
        Self::Json
    }
    /// The `Content-Type` to send.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json; charset=utf-8",
            Self::ApplicationXml => "application/xml; charset=utf-8",
            Self::TextXml => "text/xml; charset=utf-8",
        }
    }
}

impl ErrorBody {
    /// Renders the body in the chosen format.
    pub fn render(&self, format: ErrorFormat) -> Vec<u8> {
        match format {
            ErrorFormat::Json => serde_json::to_vec(self).unwrap_or_default(),
            ErrorFormat::ApplicationXml | ErrorFormat::TextXml => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error><type>{}</type><message>{}</message><detail>{}</detail></error>",
                xml_escape(&self.kind),
                xml_escape(&self.message),
                xml_escape(&self.detail)
            )
            .into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation_follows_xroad() {
        use ErrorFormat::*;
        assert_eq!(ErrorFormat::from_accept(None), Json);
        assert_eq!(ErrorFormat::from_accept(Some("foobarbaz")), Json);
        assert_eq!(
            ErrorFormat::from_accept(Some("application/json;charset=utf-8")),
            Json
        );
        assert_eq!(
            ErrorFormat::from_accept(Some("application/xml")),
            ApplicationXml
        );
        assert_eq!(
            ErrorFormat::from_accept(Some("text/xml, application/xml")),
            TextXml
        );
        assert_eq!(
            ErrorFormat::from_accept(Some("application/xml; q=0.2")),
            ApplicationXml
        );
        assert_eq!(ErrorFormat::from_accept(Some("text/*")), TextXml);
        assert_eq!(ErrorFormat::from_accept(Some("text/xml-patch+xml")), Json);
    }

    #[test]
    fn error_body_renders() {
        let e = ErrorBody {
            kind: "Server.ServerProxy.AccessDenied".into(),
            message: "no <access>".into(),
            detail: "d".into(),
        };
        let json: serde_json::Value = serde_json::from_slice(&e.render(ErrorFormat::Json)).unwrap();
        assert_eq!(json["type"], "Server.ServerProxy.AccessDenied");
        let xml = String::from_utf8(e.render(ErrorFormat::TextXml)).unwrap();
        assert!(
            xml.contains("<message>no &lt;access&gt;</message>"),
            "{xml}"
        );
    }

    #[test]
    fn service_list_shape_matches_xroad() {
        let l = ServiceList {
            service: vec![ServiceEntry {
                object_type: "SERVICE".into(),
                xroad_instance: "GL".into(),
                member_class: "GOV".into(),
                member_code: "1".into(),
                subsystem_code: "pop".into(),
                service_code: "persons".into(),
                service_type: "REST".into(),
                endpoint_list: vec![EndpointEntry {
                    method: "GET".into(),
                    path: "/persons/*".into(),
                }],
            }],
        };
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["service"][0]["endpoint_list"][0]["path"], "/persons/*");
        assert_eq!(v["service"][0]["xroad_instance"], "GL");
    }
}
