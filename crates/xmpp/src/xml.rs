//! A streaming XML parser for untrusted XMPP streams, and the element tree stanzas become.
//!
//! Parsing is two steps. [`StreamParser`] is a push framer: it takes bytes as they arrive,
//! scans them once (its state survives between reads, so a client dripping bytes costs linear
//! time), finds where the stream header and each top-level element (stanza) end, and refuses
//! what RFC 6120 section 11.1 forbids (comments, processing instructions other than the XML
//! declaration, document type declarations) and what exceeds the [`Limits`] (stanza size,
//! nesting depth, attributes per element) before the stanza is complete, so no limit can be
//! bypassed by sending slowly. A complete stanza is then parsed by quick-xml into an
//! [`Element`], resolving namespaces against the stream header's declarations and expanding
//! only the five predefined entities and character references: anything else is an error.

use quick_xml::events::Event;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The namespace of stanzas on a client stream.
pub const NS_CLIENT: &str = "jabber:client";
/// The namespace of stream elements (`stream:features`, `stream:error`).
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";

/// Limits on what one stream may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of one stanza (from its `<` to the end of its end tag), and of the stream header.
    pub max_stanza_bytes: usize,
    /// Element depth inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Attributes on one element (namespace declarations included).
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 32,
        }
    }
}

/// Why a stream was refused. Each maps to a stream error condition (RFC 6120 4.9.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// Well-formed XML that XMPP forbids: comments, processing instructions, DTDs, entities.
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    /// A stanza exceeded the size limit.
    #[error("stanza larger than {0} bytes")]
    TooBig(usize),
    /// A limit on depth or attributes.
    #[error("policy violation: {0}")]
    Policy(&'static str),
}

impl XmlError {
    /// The stream error condition element for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::Restricted(_) => "restricted-xml",
            XmlError::TooBig(_) | XmlError::Policy(_) => "policy-violation",
        }
    }
}

/// A child of an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An element with its namespace resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// The local name (without prefix).
    pub name: String,
    /// The resolved namespace.
    pub ns: String,
    /// Attributes other than namespace declarations, by qualified name (`xml:lang` keeps its
    /// prefix), values unescaped.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Adds an attribute when there is a value.
    pub fn attr_opt(self, name: &str, value: Option<impl Into<String>>) -> Element {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.into(), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) {
        self.attrs.retain(|(n, _)| n != name);
    }

    /// Adds a child element (builder style).
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Adds text (builder style).
    pub fn text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn find(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// The concatenated text children.
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            if let Node::Text(t) = node {
                out.push_str(t);
            }
        }
        out
    }

    /// Serializes the element, declaring its namespace when it differs from `parent_ns`.
    /// Elements in the stream namespace use the `stream:` prefix declared by the header.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        let stream = self.ns == NS_STREAM;
        out.push('<');
        if stream {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        if !stream && self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_into(out, &self.ns);
            out.push('\'');
        }
        for (name, value) in &self.attrs {
            let _ = write!(out, " {name}='");
            escape_into(out, value);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        let ns = if stream { parent_ns } else { &self.ns };
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_to(out, ns),
                Node::Text(t) => escape_into(out, t),
            }
        }
        out.push_str("</");
        if stream {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        out.push('>');
    }

    /// The element as a stanza of a client stream.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_to(&mut out, NS_CLIENT);
        out
    }
}

/// Escapes text for both content and single- or double-quoted attributes. Tabs and line
/// breaks are written as character references, which attribute-value normalization keeps.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// What the parser found.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream header (`<stream:stream ...>`); its attributes, namespace resolved.
    Open(Element),
    /// One complete top-level element.
    Stanza(Element),
    /// `</stream:stream>`.
    Close,
}

/// Where the scanner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// Character data (or whitespace between stanzas).
    Content,
    /// Just after `<`.
    Lt,
    /// Inside a start tag; `quote` is the open quote character, if any.
    StartTag { quote: Option<u8>, eqs: usize },
    /// Inside an end tag.
    EndTag,
    /// Inside `<?...?>` (only the XML declaration before the header gets here).
    Decl,
    /// Just after `<!`; waiting to see whether this is CDATA.
    Bang,
    /// Inside `<![CDATA[ ... ]]>`.
    CData,
}

/// The push parser of one stream (a new one after each stream restart).
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    pos: usize,
    /// Where the current top-level item (header or stanza) starts in `buf`.
    start: usize,
    /// Where the current tag starts in `buf`.
    tag_start: usize,
    scan: Scan,
    /// 0 before the header, 1 inside the stream, 2 and more inside a stanza.
    depth: usize,
    /// Namespace declarations of the stream header: prefix ("" for the default) to URI.
    stream_ns: HashMap<String, String>,
    /// The XML declaration was read (it may come once, before the header).
    decl_seen: bool,
    closed: bool,
}

impl StreamParser {
    pub fn new(limits: Limits) -> StreamParser {
        StreamParser {
            limits,
            buf: Vec::new(),
            pos: 0,
            start: 0,
            tag_start: 0,
            scan: Scan::Content,
            depth: 0,
            stream_ns: HashMap::new(),
            decl_seen: false,
            closed: false,
        }
    }

    /// Whether the stream header has been read.
    pub fn opened(&self) -> bool {
        self.depth > 0 || self.closed
    }

    /// Bytes received but not yet returned as events.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, `Ok(None)` when more bytes are needed. After an error the
    /// stream is unusable.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if self.closed {
            return Ok(None);
        }
        let limit = self.limits.max_stanza_bytes;
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            let at = self.pos;
            self.pos += 1;
            match self.scan {
                Scan::Content => {
                    if b == b'<' {
                        if self.depth <= 1 {
                            // A new top-level item starts here; whitespace before it is dropped.
                            self.start = at;
                        }
                        self.tag_start = at;
                        self.scan = Scan::Lt;
                    } else if self.depth <= 1 {
                        if !b.is_ascii_whitespace() {
                            return Err(XmlError::NotWellFormed("text outside of stanzas".into()));
                        }
                        self.start = self.pos;
                    }
                }
                Scan::Lt => match b {
                    b'/' => self.scan = Scan::EndTag,
                    b'?' => {
                        if self.depth > 0 || self.decl_seen {
                            return Err(XmlError::Restricted("processing instructions"));
                        }
                        self.decl_seen = true;
                        self.scan = Scan::Decl;
                    }
                    b'!' => {
                        if self.depth < 2 {
                            return Err(XmlError::Restricted(
                                "comments and document type declarations",
                            ));
                        }
                        self.scan = Scan::Bang;
                    }
                    _ => {
                        self.pos -= 1;
                        self.scan = Scan::StartTag {
                            quote: None,
                            eqs: 0,
                        };
                    }
                },
                Scan::Decl => {
                    if b == b'>' && at > 0 && self.buf[at - 1] == b'?' {
                        let decl = &self.buf[self.start..self.pos];
                        if !decl.starts_with(b"<?xml")
                            || decl
                                .get(5)
                                .is_some_and(|c| !c.is_ascii_whitespace() && *c != b'?')
                        {
                            return Err(XmlError::Restricted("processing instructions"));
                        }
                        self.scan = Scan::Content;
                        self.start = self.pos;
                    }
                }
                Scan::Bang => {
                    let seen = &self.buf[self.tag_start..self.pos];
                    const CDATA: &[u8] = b"<![CDATA[";
                    if seen.len() <= CDATA.len() {
                        if !CDATA.starts_with(seen) {
                            return Err(XmlError::Restricted(
                                "comments and document type declarations",
                            ));
                        }
                        if seen.len() == CDATA.len() {
                            self.scan = Scan::CData;
                        }
                    }
                }
                Scan::CData => {
                    if b == b'>' && self.buf[..at].ends_with(b"]]") && at >= self.tag_start + 11 {
                        self.scan = Scan::Content;
                    }
                }
                Scan::StartTag { quote, eqs } => match (quote, b) {
                    (Some(q), c) if c == q => {
                        self.scan = Scan::StartTag { quote: None, eqs };
                    }
                    (Some(_), b'<') => {
                        return Err(XmlError::NotWellFormed("'<' in an attribute value".into()));
                    }
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => {
                        self.scan = Scan::StartTag {
                            quote: Some(b),
                            eqs,
                        };
                    }
                    (None, b'=') => {
                        if eqs + 1 > self.limits.max_attributes {
                            return Err(XmlError::Policy("too many attributes"));
                        }
                        self.scan = Scan::StartTag {
                            quote: None,
                            eqs: eqs + 1,
                        };
                    }
                    (None, b'<') => {
                        return Err(XmlError::NotWellFormed("'<' inside a tag".into()));
                    }
                    (None, b'>') => {
                        self.scan = Scan::Content;
                        let empty = self.buf[at - 1] == b'/';
                        if self.depth == 0 {
                            if empty {
                                return Err(XmlError::NotWellFormed(
                                    "the stream header must stay open".into(),
                                ));
                            }
                            let header = self.buf[self.start..self.pos].to_vec();
                            let open = self.parse_header(&header)?;
                            self.depth = 1;
                            self.consume();
                            return Ok(Some(StreamEvent::Open(open)));
                        }
                        if !empty {
                            self.depth += 1;
                            if self.depth > self.limits.max_depth + 1 {
                                return Err(XmlError::Policy("elements nested too deeply"));
                            }
                        } else if self.depth == 1 {
                            return self.complete().map(Some);
                        }
                    }
                    (None, _) => {}
                },
                Scan::EndTag => {
                    if b == b'>' {
                        self.scan = Scan::Content;
                        match self.depth {
                            0 => {
                                return Err(XmlError::NotWellFormed(
                                    "end tag before the stream header".into(),
                                ));
                            }
                            1 => {
                                let tag = &self.buf[self.tag_start..self.pos];
                                let name = tag[2..tag.len() - 1].trim_ascii();
                                if !self.is_stream_name(name) {
                                    return Err(XmlError::NotWellFormed(
                                        "mismatched end tag".into(),
                                    ));
                                }
                                self.closed = true;
                                self.depth = 0;
                                self.consume();
                                return Ok(Some(StreamEvent::Close));
                            }
                            2 => {
                                self.depth = 1;
                                return self.complete().map(Some);
                            }
                            _ => self.depth -= 1,
                        }
                    }
                }
            }
            // Whitespace between stanzas moves `start` along, so this measures the stanza (or
            // header) being read, however slowly it arrives.
            if self.pos - self.start > limit {
                return Err(XmlError::TooBig(limit));
            }
        }
        // Everything before `start` is done with. The allocation goes too: between stanzas
        // an idle stream holds no buffer (the next read allocates what it needs).
        if self.start > 0 && self.start == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
            self.start = 0;
            self.tag_start = 0;
        }
        Ok(None)
    }

    /// Drops the bytes of the item just returned.
    fn consume(&mut self) {
        if self.pos == self.buf.len() {
            // Nothing after the item: free the buffer rather than keep its capacity idle.
            self.buf = Vec::new();
        } else {
            self.buf.drain(..self.pos);
        }
        self.pos = 0;
        self.start = 0;
        self.tag_start = 0;
    }

    fn is_stream_name(&self, name: &[u8]) -> bool {
        let (prefix, local) = match name.iter().position(|&c| c == b':') {
            Some(i) => (&name[..i], &name[i + 1..]),
            None => (&b""[..], name),
        };
        let prefix = String::from_utf8_lossy(prefix);
        local == b"stream"
            && self
                .stream_ns
                .get(prefix.as_ref())
                .is_some_and(|ns| ns == NS_STREAM)
    }

    fn complete(&mut self) -> Result<StreamEvent, XmlError> {
        let bytes = self.buf[self.start..self.pos].to_vec();
        self.consume();
        parse_element(&bytes, &self.stream_ns, self.limits).map(StreamEvent::Stanza)
    }

    fn parse_header(&mut self, bytes: &[u8]) -> Result<Element, XmlError> {
        let mut reader = quick_xml::Reader::from_reader(bytes);
        let start = loop {
            match reader.read_event().map_err(not_well_formed)? {
                Event::Start(start) => break start,
                Event::Decl(_) | Event::Text(_) => {}
                _ => return Err(XmlError::NotWellFormed("bad stream header".into())),
            }
        };
        let mut scope = HashMap::new();
        let (name, ns, attrs) = resolve_start(&start, &mut scope, &HashMap::new())?;
        if name != "stream" || ns != NS_STREAM {
            return Err(XmlError::NotWellFormed(
                "the stream must open with stream:stream".into(),
            ));
        }
        self.stream_ns = scope;
        Ok(Element {
            name,
            ns,
            attrs,
            children: Vec::new(),
        })
    }
}

fn not_well_formed(e: impl std::fmt::Display) -> XmlError {
    XmlError::NotWellFormed(e.to_string())
}

type Scope = HashMap<String, String>;

/// A start tag resolved: local name, namespace, attributes without declarations.
type Resolved = (String, String, Vec<(String, String)>);

/// Resolves a start tag's name and attributes against the declarations in scope (updated
/// with the tag's own), returning (local name, namespace, attributes without declarations).
fn resolve_start(
    start: &quick_xml::events::BytesStart<'_>,
    scope: &mut Scope,
    parent: &Scope,
) -> Result<Resolved, XmlError> {
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(not_well_formed)?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(not_well_formed)?
            .to_owned();
        let value = attr
            // XML 1.0 attribute-value normalization (line breaks and tabs become spaces), then the
            // predefined entities only.
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| match e {
                quick_xml::Error::Escape(_) => XmlError::Restricted("entity references"),
                e => not_well_formed(e),
            })?
            .into_owned();
        if key == "xmlns" {
            scope.insert(String::new(), value);
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            scope.insert(prefix.to_owned(), value);
        } else {
            if attrs.iter().any(|(k, _)| *k == key) {
                return Err(XmlError::NotWellFormed("duplicate attribute".into()));
            }
            attrs.push((key, value));
        }
    }
    let qname = std::str::from_utf8(start.name().as_ref())
        .map_err(not_well_formed)?
        .to_owned();
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (p.to_owned(), l.to_owned()),
        None => (String::new(), qname),
    };
    let ns = scope
        .get(&prefix)
        .or_else(|| parent.get(&prefix))
        .cloned()
        .ok_or_else(|| {
            if prefix.is_empty() {
                XmlError::NotWellFormed("no default namespace".into())
            } else {
                XmlError::NotWellFormed(format!("undeclared prefix {prefix}"))
            }
        })?;
    Ok((local, ns, attrs))
}

/// Parses one complete element. `outer` holds the declarations in scope (the stream header's).
pub fn parse_element(bytes: &[u8], outer: &Scope, limits: Limits) -> Result<Element, XmlError> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    // A stack of (element, declarations in scope for its children).
    let mut stack: Vec<(Element, Scope)> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(not_well_formed)?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(XmlError::NotWellFormed("content after the stanza".into()));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::Policy("elements nested too deeply"));
                }
                let parent = stack.last().map_or(outer, |(_, s)| s);
                let mut scope = Scope::new();
                let (name, ns, attrs) = resolve_start(start, &mut scope, parent)?;
                if attrs.len() + scope.len() > limits.max_attributes {
                    return Err(XmlError::Policy("too many attributes"));
                }
                let mut merged = parent.clone();
                merged.extend(scope);
                let element = Element {
                    name,
                    ns,
                    attrs,
                    children: Vec::new(),
                };
                if matches!(event, Event::Start(_)) {
                    stack.push((element, merged));
                } else {
                    match stack.last_mut() {
                        Some((parent, _)) => parent.children.push(Node::Element(element)),
                        None => root = Some(element),
                    }
                }
            }
            Event::End(_) => {
                let (element, _) = stack
                    .pop()
                    .ok_or_else(|| XmlError::NotWellFormed("unexpected end tag".into()))?;
                match stack.last_mut() {
                    Some((parent, _)) => parent.children.push(Node::Element(element)),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => {
                let text = text.xml10_content().map_err(not_well_formed)?;
                push_text(&mut stack, &text)?;
            }
            Event::CData(data) => {
                let text = data.decode().map_err(not_well_formed)?;
                push_text(&mut stack, &text)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = reference.decode().map_err(not_well_formed)?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or(XmlError::Restricted("entity references"))?
                            .to_owned()
                    }
                    Err(e) => return Err(not_well_formed(e)),
                };
                if resolved
                    .chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
                {
                    return Err(XmlError::NotWellFormed(
                        "invalid character reference".into(),
                    ));
                }
                push_text(&mut stack, &resolved)?;
            }
            Event::Comment(_) | Event::DocType(_) => {
                return Err(XmlError::Restricted(
                    "comments and document type declarations",
                ));
            }
            Event::PI(_) | Event::Decl(_) => {
                return Err(XmlError::Restricted("processing instructions"));
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::NotWellFormed("unclosed element".into()));
    }
    root.ok_or_else(|| XmlError::NotWellFormed("no element".into()))
}

fn push_text(stack: &mut [(Element, Scope)], text: &str) -> Result<(), XmlError> {
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(XmlError::NotWellFormed("control characters in text".into()));
    }
    match stack.last_mut() {
        Some((element, _)) => {
            // Merge adjacent text (quick-xml splits text at entity references).
            if let Some(Node::Text(last)) = element.children.last_mut() {
                last.push_str(text);
            } else {
                element.children.push(Node::Text(text.to_owned()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError::NotWellFormed("text outside of the stanza".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' \
        xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    fn parser() -> StreamParser {
        StreamParser::new(Limits {
            max_stanza_bytes: 200,
            max_depth: 4,
            max_attributes: 4,
        })
    }

    fn events(input: &str) -> Result<Vec<StreamEvent>, XmlError> {
        let mut p = parser();
        p.feed(input.as_bytes());
        let mut out = Vec::new();
        while let Some(e) = p.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    /// Feeds one byte at a time: the result must not depend on how bytes arrive.
    fn events_dripped(input: &str) -> Result<Vec<StreamEvent>, XmlError> {
        let mut p = parser();
        let mut out = Vec::new();
        for b in input.as_bytes() {
            p.feed(std::slice::from_ref(b));
            while let Some(e) = p.next_event()? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn both(input: &str) -> Result<Vec<StreamEvent>, XmlError> {
        let whole = events(input);
        assert_eq!(whole, events_dripped(input), "dripping changed the result");
        whole
    }

    #[test]
    fn parses_header_stanzas_and_close() {
        let input = format!(
            "{HEADER}  <message to='b@x' type='chat'><body>a &amp; b &#x263A; &lt;</body>\
             <thing xmlns='urn:x'><![CDATA[<raw>]]></thing></message>\n\
             <stream:features/><iq id='1'/></stream:stream>"
        );
        let events = both(&input).unwrap();
        assert_eq!(events.len(), 5);
        let StreamEvent::Open(open) = &events[0] else {
            panic!("no header")
        };
        assert_eq!(open.get_attr("to"), Some("example.com"));
        let StreamEvent::Stanza(message) = &events[1] else {
            panic!("no message")
        };
        assert!(message.is("message", NS_CLIENT));
        assert_eq!(
            message.find("body", NS_CLIENT).unwrap().text_content(),
            "a & b ☺ <"
        );
        assert_eq!(
            message.find("thing", "urn:x").unwrap().text_content(),
            "<raw>"
        );
        let StreamEvent::Stanza(features) = &events[2] else {
            panic!()
        };
        assert!(features.is("features", NS_STREAM));
        assert!(matches!(&events[3], StreamEvent::Stanza(iq) if iq.get_attr("id") == Some("1")));
        assert_eq!(events[4], StreamEvent::Close);
    }

    #[test]
    fn round_trips_through_the_writer() {
        let element = Element::new("message", NS_CLIENT)
            .attr("to", "a'b\"<c>&")
            .child(Element::new("body", NS_CLIENT).text("x < y & 'z'"))
            .child(Element::new("request", "urn:xmpp:receipts"));
        let input = format!("{HEADER}{}", element.to_xml());
        let events = both(&input).unwrap();
        assert_eq!(events[1], StreamEvent::Stanza(element));
    }

    #[test]
    fn refuses_what_xmpp_restricts() {
        let cases = [
            ("<!-- hi -->", "restricted-xml"),
            ("<!DOCTYPE x [<!ENTITY a 'b'>]>", "restricted-xml"),
            ("<?php x?>", "restricted-xml"),
            ("<message><!-- c --></message>", "restricted-xml"),
            ("<message><?pi x?></message>", "restricted-xml"),
            ("<message><body>&lol;</body></message>", "restricted-xml"),
            ("<message a='&ext;'/>", "restricted-xml"),
            ("<message><body>&#0;</body></message>", "not-well-formed"),
            ("<message></iq>", "not-well-formed"),
            ("hello", "not-well-formed"),
            ("<message a='1' a='2'/>", "not-well-formed"),
            ("<p:message/>", "not-well-formed"),
            (
                "<message a='1' b='2' c='3' d='4' e='5'/>",
                "policy-violation",
            ),
            ("<a><b><c><d><e/></d></c></b></a>", "policy-violation"),
            (
                &format!("<message><body>{}</body></message>", "x".repeat(300)),
                "policy-violation",
            ),
        ];
        for (stanza, condition) in cases {
            let input = format!("{HEADER}{stanza}");
            let err = events(&input).expect_err(stanza);
            assert_eq!(err.condition(), condition, "{stanza}: {err}");
            let err = events_dripped(&input).expect_err(stanza);
            assert_eq!(err.condition(), condition, "{stanza} (dripped): {err}");
        }
    }

    #[test]
    fn refuses_a_dtd_before_the_header() {
        let err =
            events("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]><stream:stream/>")
                .unwrap_err();
        assert_eq!(err.condition(), "restricted-xml");
    }

    #[test]
    fn an_oversized_stanza_is_refused_before_it_ends() {
        let mut p = parser();
        p.feed(HEADER.as_bytes());
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
        p.feed(b"<message><body>");
        p.feed(&[b'x'; 190]);
        assert_eq!(p.next_event(), Err(XmlError::TooBig(200)));
    }

    #[test]
    fn whitespace_keepalives_do_not_accumulate() {
        let mut p = parser();
        p.feed(HEADER.as_bytes());
        p.next_event().unwrap();
        for _ in 0..1000 {
            p.feed(b" \n");
            assert_eq!(p.next_event(), Ok(None));
        }
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn the_header_needs_the_stream_namespace() {
        let err = events("<stream xmlns='jabber:client'>").unwrap_err();
        assert_eq!(err.condition(), "not-well-formed");
        let err = events("<stream:stream xmlns:stream='urn:other'>").unwrap_err();
        assert_eq!(err.condition(), "not-well-formed");
    }
}
