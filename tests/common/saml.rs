//! SAML steps as a browser takes them: reading the IdP's auto-posting form, and posting its
//! response to the ACS cross-site, where `SameSite=Lax` cookies are not sent.

use super::browser::{Browser, Page};

/// The value of the hidden input `name` of an HTML form.
pub fn form_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
}

/// Posts `encoded` to the ACS at `acs_url` as the IdP's page does: cross-site, without cookies.
pub async fn post_cross_site(acs_url: &str, encoded: &str) -> Page {
    let plain = Browser::new();
    plain
        .send(
            plain
                .client
                .post(acs_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "SAMLResponse={}",
                    url::form_urlencoded::byte_serialize(encoded.as_bytes()).collect::<String>()
                )),
        )
        .await
}
