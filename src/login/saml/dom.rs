//! Reading SAML documents: the namespaces, the markup refused before any parsing, and strict
//! lookups over a parsed tree (names matched with their namespace, attributes only
//! unqualified, text only where an element holds nothing else).

use bergshamra::xml::uppsala::{self, Document, NodeId, NodeKind};

pub(crate) const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub(crate) const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(crate) const METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub(crate) const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
pub(crate) const XMLENC: &str = "http://www.w3.org/2001/04/xmlenc#";

/// Why a document was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// A document type declaration, an entity, or a processing instruction: refused before
    /// parsing, whatever they would have meant.
    ForbiddenMarkup,
    /// Not well-formed XML.
    Malformed,
}

/// Parses `text` after refusing what a SAML message never needs and XML attacks live in:
/// `<!DOCTYPE`, `<!ENTITY` (and any other `<!` declaration) and processing instructions. The
/// XML declaration at the very start is allowed; comments and CDATA are left to the parser.
pub(crate) fn parse(text: &str) -> Result<Document<'_>, Unreadable> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let body = match body.strip_prefix("<?xml") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_whitespace()) => {
            let end = rest.find("?>").ok_or(Unreadable::Malformed)?;
            &rest[end + 2..]
        }
        _ => body,
    };
    let bytes = body.as_bytes();
    for (at, _) in body.match_indices('<') {
        match bytes.get(at + 1) {
            Some(b'?') => return Err(Unreadable::ForbiddenMarkup),
            Some(b'!') => {
                let rest = &body[at + 2..];
                if !rest.starts_with("--") && !rest.starts_with("[CDATA[") {
                    return Err(Unreadable::ForbiddenMarkup);
                }
            }
            _ => {}
        }
    }
    uppsala::parse(text).map_err(|_| Unreadable::Malformed)
}

/// Whether `node` is the element `{namespace}local`.
pub(crate) fn is(doc: &Document<'_>, node: NodeId, namespace: &str, local: &str) -> bool {
    doc.element(node)
        .is_some_and(|e| e.matches_name_ns(namespace, local))
}

/// The element children of `node`, in order.
pub(crate) fn child_elements<'d>(
    doc: &'d Document<'_>,
    node: NodeId,
) -> impl Iterator<Item = NodeId> + 'd {
    doc.children_iter(node)
        .filter(move |&child| doc.element(child).is_some())
}

/// The children of `node` named `{namespace}local`.
pub(crate) fn children<'d>(
    doc: &'d Document<'_>,
    node: NodeId,
    namespace: &'d str,
    local: &'d str,
) -> impl Iterator<Item = NodeId> + 'd {
    child_elements(doc, node).filter(move |&child| is(doc, child, namespace, local))
}

/// The one child of `node` named `{namespace}local`; `Err` when there are several.
pub(crate) fn only_child(
    doc: &Document<'_>,
    node: NodeId,
    namespace: &str,
    local: &str,
) -> Result<Option<NodeId>, ()> {
    let mut found = children(doc, node, namespace, local);
    let first = found.next();
    match found.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

/// Every element of the document named `{namespace}local`, wherever it is.
pub(crate) fn all(doc: &Document<'_>, namespace: &str, local: &str) -> Vec<NodeId> {
    doc.get_elements_by_tag_name_ns(namespace, local)
}

/// The unqualified attribute `name` of element `node`: a namespaced attribute of the same
/// local name is a different attribute and never read in its place.
pub(crate) fn attr<'d>(doc: &'d Document<'_>, node: NodeId, name: &str) -> Option<&'d str> {
    doc.element(node)?
        .attributes
        .iter()
        .find(|a| a.name.namespace_uri.is_none() && *a.name.local_name == *name)
        .map(|a| &*a.value)
}

/// The whole text of `node`, trimmed, when it holds only text (CDATA included). A comment,
/// a processing instruction or an element inside makes it `None`: a value is never read as
/// its first text node (the NameID-truncation class, CVE-2017-11427).
pub(crate) fn text(doc: &Document<'_>, node: NodeId) -> Option<String> {
    let mut text = String::new();
    for child in doc.children_iter(node) {
        match doc.node_kind(child)? {
            NodeKind::Text(part) | NodeKind::CData(part) => text.push_str(part),
            _ => return None,
        }
    }
    Some(text.trim().to_owned())
}

/// Whether any descendant of `node` is a comment or a processing instruction.
pub(crate) fn has_comments(doc: &Document<'_>, node: NodeId) -> bool {
    doc.descendants(node).into_iter().any(|n| {
        matches!(
            doc.node_kind(n),
            Some(NodeKind::Comment(_) | NodeKind::ProcessingInstruction(_))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_entities_and_instructions_are_refused_before_parsing() {
        for bad in [
            "<!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>",
            "<?xml version=\"1.0\"?><!DOCTYPE r SYSTEM \"file:///etc/passwd\"><r/>",
            "<r><?php echo 1 ?></r>",
            "<?xml-stylesheet href=\"a\"?><r/>",
            "<r><!ENTITY x \"y\"></r>",
            "\u{feff}<!DOCTYPE r><r/>",
        ] {
            assert_eq!(parse(bad).err(), Some(Unreadable::ForbiddenMarkup), "{bad}");
        }
        for good in [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><r/>",
            "<r><!-- note --><![CDATA[<x>]]></r>",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        assert_eq!(parse("<r>").err(), Some(Unreadable::Malformed));
    }

    #[test]
    fn a_value_with_anything_but_text_inside_is_no_value() {
        let doc = parse("<r><a>one<!-- c -->two</a><b> whole </b><c>x<d/></c></r>").unwrap();
        let root = doc.document_element().unwrap();
        let kids: Vec<_> = child_elements(&doc, root).collect();
        assert_eq!(text(&doc, kids[0]), None);
        assert_eq!(text(&doc, kids[1]).as_deref(), Some("whole"));
        assert_eq!(text(&doc, kids[2]), None);
    }

    #[test]
    fn a_namespaced_attribute_is_not_read_for_a_plain_one() {
        let doc = parse(r#"<r xmlns:e="urn:e" e:ID="evil"/>"#).unwrap();
        let root = doc.document_element().unwrap();
        assert_eq!(attr(&doc, root, "ID"), None);
    }
}
