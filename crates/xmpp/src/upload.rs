//! HTTP File Upload (XEP-0363): the upload service `upload_domain` hands out slots in the
//! Tidings file store.
//!
//! A slot is an upload of the requesting user's, with the same size limit and quota as any
//! other (the files service decides). The `PUT` URL carries a signature that authorises that
//! one upload until it expires, since XMPP clients hold no bearer token; the `GET` URL is a
//! capability for the finished file that anyone it is shared with can use (it redirects to a
//! short-lived signed link). Both point at the HTTP listener (`upload_base_url`).

use super::{Conn, NS_CLIENT, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_STANZAS, condition_for, iq_error};
use crate::xml::Element;
use tidings_core::policy::{Scope, decide_scope};

pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
const NS_DATA: &str = "jabber:x:data";

/// What the gateway needs to hand out slots: the file store and the base URL of the HTTP
/// listener as XMPP clients reach it (`https://host:port`, no trailing slash).
pub struct Uploads {
    pub files: tidings_files::Files,
    pub base_url: String,
}

impl Conn {
    /// Whether `jid` is the upload service (and the gateway offers one).
    pub(super) fn is_upload_service(&self, jid: &str) -> bool {
        self.gw.uploads.is_some() && jid.eq_ignore_ascii_case(&self.gw.config.upload_domain)
    }

    /// IQs to the upload service: disco#info (with the size limit) and slot requests.
    pub(super) async fn on_upload_iq(&mut self, stanza: &Element, payload: &Element) {
        let Some(uploads) = self.gw.uploads.as_ref() else {
            return;
        };
        let kind = stanza.get_attr("type").unwrap_or_default();
        let result = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr_opt("id", stanza.get_attr("id"))
            .attr("to", self.full.clone())
            .attr("from", self.gw.config.upload_domain.clone());
        match (kind, payload.name.as_str(), payload.ns.as_str()) {
            ("get", "query", NS_DISCO_INFO) => {
                let max = uploads.files.config().max_file_bytes;
                let form = Element::new("x", NS_DATA)
                    .attr("type", "result")
                    .child(
                        Element::new("field", NS_DATA)
                            .attr("var", "FORM_TYPE")
                            .attr("type", "hidden")
                            .child(Element::new("value", NS_DATA).text(NS_UPLOAD)),
                    )
                    .child(
                        Element::new("field", NS_DATA)
                            .attr("var", "max-file-size")
                            .child(Element::new("value", NS_DATA).text(max.to_string())),
                    );
                let query = Element::new("query", NS_DISCO_INFO)
                    .child(
                        Element::new("identity", NS_DISCO_INFO)
                            .attr("category", "store")
                            .attr("type", "file")
                            .attr("name", "Tidings file upload"),
                    )
                    .child(Element::new("feature", NS_DISCO_INFO).attr("var", NS_DISCO_INFO))
                    .child(Element::new("feature", NS_DISCO_INFO).attr("var", NS_UPLOAD))
                    .child(form);
                self.send(&result.child(query));
            }
            ("get", "query", NS_DISCO_ITEMS) => {
                // The service has no items, and says so rather than refusing (clients walk
                // every service the server lists).
                self.send(&result.child(Element::new("query", NS_DISCO_ITEMS)));
            }
            ("get", "request", NS_UPLOAD) => {
                let filename = payload.get_attr("filename").unwrap_or_default();
                let Some(size) = payload.get_attr("size").and_then(|s| s.parse::<u64>().ok())
                else {
                    self.send(&iq_error(
                        stanza,
                        "modify",
                        "bad-request",
                        Some("size must be a number of bytes"),
                    ));
                    return;
                };
                let max = uploads.files.config().max_file_bytes;
                if size > max {
                    // XEP-0363 §4.1: file-too-large, with the limit.
                    let error =
                        Element::new("error", NS_CLIENT)
                            .attr("type", "modify")
                            .child(Element::new("not-acceptable", NS_STANZAS))
                            .child(Element::new("file-too-large", NS_UPLOAD).child(
                                Element::new("max-file-size", NS_UPLOAD).text(max.to_string()),
                            ));
                    let el = Element::new("iq", NS_CLIENT)
                        .attr("type", "error")
                        .attr_opt("id", stanza.get_attr("id"))
                        .attr("to", self.full.clone())
                        .attr("from", self.gw.config.upload_domain.clone())
                        .child(error);
                    self.send(&el);
                    return;
                }
                let slot = match decide_scope(self.caller.scopes, Scope::Files) {
                    Ok(()) => {
                        uploads
                            .files
                            .upload_slot(
                                &self.caller,
                                filename,
                                size,
                                payload.get_attr("content-type"),
                            )
                            .await
                    }
                    Err(e) => Err(e),
                };
                match slot {
                    Ok(slot) => {
                        let base = &uploads.base_url;
                        let el = result.child(
                            Element::new("slot", NS_UPLOAD)
                                .child(
                                    Element::new("put", NS_UPLOAD)
                                        .attr("url", format!("{base}{}", slot.put_path)),
                                )
                                .child(
                                    Element::new("get", NS_UPLOAD)
                                        .attr("url", format!("{base}{}", slot.get_path)),
                                ),
                        );
                        self.send(&el);
                    }
                    Err(e) => {
                        let (kind, condition) = condition_for(e.code);
                        self.send(&iq_error(stanza, kind, condition, Some(&e.message)));
                    }
                }
            }
            _ => self.send(&iq_error(stanza, "cancel", "service-unavailable", None)),
        }
    }
}
