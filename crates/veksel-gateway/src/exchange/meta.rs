//! X-Road's metaservices: `listClients` (answered by the client's own gateway from
//! the global configuration) and `listMethods`, `allowedMethods`, `getOpenAPI`
//! (answered by the provider's gateway from its local configuration, as signed
//! responses like any other).

use super::fault_response;
use crate::Gateway;
use crate::body::{self, GwBody};
use crate::confclient::ConfState;
use crate::serverconf::{LocalClient, ServiceConfig};
use http::{HeaderValue, Method, Request, Response};
use std::sync::Arc;
use veksel_id::{ClientId, Fault, FaultCode, Origin};
use veksel_proto::access::{self, Caller, Endpoint};
use veksel_proto::meta::{
    ClientEntry, ClientList, EndpointEntry, ServiceEntry, ServiceList, XRoadIdentifier,
};
use veksel_proto::r1::{Metaservice, single_query_param};

fn json_response(value: &impl serde::Serialize) -> Response<GwBody> {
    let mut resp = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// `GET /listClients[?xRoadInstance=…]`: every member and subsystem of the instance.
pub fn list_clients(
    gw: &Arc<Gateway>,
    req: &Request<GwBody>,
    accept: Option<&str>,
) -> Response<GwBody> {
    let detail = super::detail_id();
    if req.method() != Method::GET {
        let f = Fault::client(FaultCode::BadRequest, "listClients accepts GET only");
        return fault_response(&f, accept, &detail);
    }
    let conf = match gw.conf.current(Origin::ClientProxy) {
        Ok(c) => c,
        Err(f) => return fault_response(&f, accept, &detail),
    };
    let instance = match single_query_param(req.uri().query(), "xRoadInstance") {
        Ok(i) => i
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| conf.conf().instance.clone()),
        Err(f) => return fault_response(&f, accept, &detail),
    };
    let mut member = Vec::new();
    if instance == conf.conf().instance {
        for m in &conf.conf().members {
            let id = |sub: Option<&str>| XRoadIdentifier {
                object_type: if sub.is_some() { "SUBSYSTEM" } else { "MEMBER" }.to_owned(),
                xroad_instance: m.id.instance().to_owned(),
                member_class: m.id.class().to_owned(),
                member_code: m.id.code().to_owned(),
                subsystem_code: sub.map(str::to_owned),
            };
            member.push(ClientEntry {
                id: id(None),
                name: m.name.clone(),
                subsystem_name: None,
            });
            for s in &m.subsystems {
                member.push(ClientEntry {
                    id: id(Some(&s.code)),
                    name: m.name.clone(),
                    subsystem_name: Some(s.name.clone()),
                });
            }
        }
    }
    let list = ClientList { member };
    let wants_json = accept.is_some_and(|a| {
        a.split(',')
            .any(|t| t.trim().starts_with("application/json"))
    });
    if wants_json {
        json_response(&list)
    } else {
        let mut resp = Response::new(body::full(list.to_xml()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        resp
    }
}

fn entry(
    local: &LocalClient,
    code: &str,
    service: &ServiceConfig,
    endpoints: Vec<Endpoint>,
) -> ServiceEntry {
    let m = local.id.member();
    let service_type = if service.openapi.is_some() {
        "OPENAPI"
    } else {
        "REST"
    };
    ServiceEntry {
        object_type: "SERVICE".to_owned(),
        xroad_instance: m.instance().to_owned(),
        member_class: m.class().to_owned(),
        member_code: m.code().to_owned(),
        subsystem_code: local.id.code().to_owned(),
        service_code: code.to_owned(),
        service_type: service_type.to_owned(),
        endpoint_list: endpoints
            .into_iter()
            .map(|e| EndpointEntry {
                method: e.method,
                path: e.path,
            })
            .collect(),
    }
}

/// Answers a metaservice call on the provider's gateway.
pub fn provider_answer(
    conf: &ConfState,
    local: &LocalClient,
    client: &ClientId,
    meta: Metaservice,
    query: Option<&str>,
) -> Result<Response<GwBody>, Fault> {
    match meta {
        Metaservice::ListMethods => {
            let service = local
                .services
                .iter()
                .map(|(code, s)| entry(local, code, s, s.endpoints.clone()))
                .collect();
            Ok(json_response(&ServiceList { service }))
        }
        Metaservice::AllowedMethods => {
            let global_groups = conf.index.global_groups_of(client);
            let local_groups = local.local_groups_of(client);
            let caller = Caller {
                client,
                global_groups: &global_groups,
                local_groups: &local_groups,
            };
            let rules = access::rules_for(&local.access, &caller);
            let mut service = Vec::new();
            for (code, s) in &local.services {
                let mine: Vec<&Endpoint> = rules
                    .iter()
                    .filter(|r| &r.service_code == code)
                    .map(|r| &r.endpoint)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let mut endpoints: Vec<Endpoint> = s
                    .endpoints
                    .iter()
                    .filter(|e| mine.iter().any(|m| e.covered_by(m)))
                    .cloned()
                    .collect();
                if endpoints.is_empty() {
                    endpoints = mine.into_iter().cloned().collect();
                }
                service.push(entry(local, code, s, endpoints));
            }
            Ok(json_response(&ServiceList { service }))
        }
        Metaservice::GetOpenApi => {
            let code = single_query_param(query, "serviceCode")
                .map_err(|f| super::reorigin(f, Origin::ServerProxy))?
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Fault::server_proxy(
                        FaultCode::InvalidRequest,
                        "Missing serviceCode in the query",
                    )
                })?;
            let s = local.services.get(&code).ok_or_else(|| {
                Fault::server_proxy(
                    FaultCode::UnknownService,
                    format!("Service not found: {}/{code}", local.id),
                )
            })?;
            let doc = s.openapi.as_ref().ok_or_else(|| {
                Fault::server_proxy(
                    FaultCode::UnknownService,
                    format!("Service {}/{code} has no OpenAPI description", local.id),
                )
            })?;
            let content_type = if serde_json::from_str::<serde_json::Value>(doc).is_ok() {
                "application/json; charset=utf-8"
            } else {
                "text/yaml; charset=utf-8"
            };
            let mut resp = Response::new(body::full(doc.clone()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
            Ok(resp)
        }
    }
}
