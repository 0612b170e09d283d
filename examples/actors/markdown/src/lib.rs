//! Renders Markdown to HTML: a pure actor that needs no capability.
//!
//! Operation `render`: request [`RenderRequest`], response [`RenderResponse`] (MessagePack).
//! The input is CommonMark, with tables, strikethrough and task lists on by default.
//! Raw HTML in the input is escaped, and links or images to `javascript:`, `vbscript:` or
//! `data:` URLs are dropped, unless the request sets `raw_html`: the output of untrusted
//! input is then safe to embed in a page.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, html};
use serde::{Deserialize, Serialize};
use sigil_actor::prelude::*;

sigil_actor::actor! {
    "render" => render,
}

/// The request of `render`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RenderRequest {
    /// The Markdown source.
    pub markdown: String,
    /// Which extensions to CommonMark to use; absent means [`RenderOptions::default`].
    pub options: RenderOptions,
}

/// Extensions to CommonMark, and whether raw HTML passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct RenderOptions {
    /// GitHub-style pipe tables. Default: on.
    pub tables: bool,
    /// `~~strikethrough~~`. Default: on.
    pub strikethrough: bool,
    /// `- [x] task` list items. Default: on.
    pub tasklists: bool,
    /// Footnotes: `[^1]` and `[^1]: note`. Default: off.
    pub footnotes: bool,
    /// Curly quotes, en and em dashes, ellipses. Default: off.
    pub smart_punctuation: bool,
    /// `# Heading {#id .class}` attributes. Default: off.
    pub heading_attributes: bool,
    /// Pass raw HTML and every link URL through unchanged: only for trusted input.
    /// Default: off (raw HTML is escaped, script URLs are dropped).
    pub raw_html: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            tables: true,
            strikethrough: true,
            tasklists: true,
            footnotes: false,
            smart_punctuation: false,
            heading_attributes: false,
            raw_html: false,
        }
    }
}

impl RenderOptions {
    fn parser_options(self) -> Options {
        let flags = [
            (self.tables, Options::ENABLE_TABLES),
            (self.strikethrough, Options::ENABLE_STRIKETHROUGH),
            (self.tasklists, Options::ENABLE_TASKLISTS),
            (self.footnotes, Options::ENABLE_FOOTNOTES),
            (self.smart_punctuation, Options::ENABLE_SMART_PUNCTUATION),
            (self.heading_attributes, Options::ENABLE_HEADING_ATTRIBUTES),
        ];
        flags
            .into_iter()
            .filter(|(on, _)| *on)
            .fold(Options::empty(), |options, (_, flag)| options | flag)
    }
}

/// The response of `render`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RenderResponse {
    /// The rendered HTML fragment.
    pub html: String,
}

/// Renders the request's Markdown to an HTML fragment.
fn render(request: RenderRequest) -> HandlerResult<RenderResponse> {
    Ok(RenderResponse {
        html: to_html(&request.markdown, request.options),
    })
}

fn to_html(markdown: &str, options: RenderOptions) -> String {
    let parser = Parser::new_ext(markdown, options.parser_options());
    // HTML is usually a little longer than its Markdown.
    let mut out = String::with_capacity(markdown.len() + markdown.len() / 2);
    if options.raw_html {
        html::push_html(&mut out, parser);
    } else {
        html::push_html(&mut out, parser.map(defuse));
    }
    out
}

/// Makes one event safe for untrusted input: raw HTML becomes escaped text, and a link
/// or image to a script-capable URL loses its URL.
fn defuse(event: Event<'_>) -> Event<'_> {
    match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    }
}

/// `url`, or an empty URL when its scheme can run script in a browser.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    // Browsers ignore ASCII whitespace and control characters inside a scheme.
    let scheme: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_ascii_control())
        .take_while(|c| *c != ':')
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    let has_scheme = url.contains(':');
    if has_scheme && matches!(scheme.as_str(), "javascript" | "vbscript" | "data") {
        CowStr::Borrowed("")
    } else {
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(markdown: &str) -> String {
        to_html(markdown, RenderOptions::default())
    }

    #[test]
    fn renders_commonmark() {
        assert_eq!(
            html("# Hi\n\n*there*"),
            "<h1>Hi</h1>\n<p><em>there</em></p>\n"
        );
    }

    #[test]
    fn tables_strikethrough_and_tasklists_are_on_by_default() {
        let out = html("| a | b |\n|---|---|\n| 1 | 2 |\n\n~~old~~\n\n- [x] done\n");
        assert!(out.contains("<table>"), "{out}");
        assert!(out.contains("<del>old</del>"), "{out}");
        assert!(out.contains("checkbox"), "{out}");
    }

    #[test]
    fn options_turn_extensions_off_and_on() {
        let plain = RenderOptions {
            tables: false,
            strikethrough: false,
            tasklists: false,
            ..RenderOptions::default()
        };
        assert!(!to_html("~~old~~", plain).contains("<del>"));
        let smart = RenderOptions {
            smart_punctuation: true,
            footnotes: true,
            ..RenderOptions::default()
        };
        assert!(to_html("\"quoted\" -- yes", smart).contains('\u{201c}'));
        assert!(to_html("a[^1]\n\n[^1]: note\n", smart).contains("footnote"));
    }

    #[test]
    fn raw_html_is_escaped_unless_allowed() {
        let input = "<script>alert(1)</script>\n\nhi <b>x</b>";
        let safe = html(input);
        assert!(!safe.contains("<script>"), "{safe}");
        assert!(safe.contains("&lt;script&gt;"), "{safe}");
        assert!(!safe.contains("<b>"), "{safe}");
        let trusted = RenderOptions {
            raw_html: true,
            ..RenderOptions::default()
        };
        assert!(to_html(input, trusted).contains("<script>"));
    }

    #[test]
    fn script_urls_are_dropped() {
        for url in [
            "javascript:alert(1)",
            "JavaScript:x",
            " java\tscript:x",
            "data:text/html,x",
        ] {
            let out = html(&format!("[a](<{url}>) ![b](<{url}>)"));
            assert!(
                !out.to_ascii_lowercase().contains("script:"),
                "{url}: {out}"
            );
            assert!(!out.contains("data:"), "{url}: {out}");
        }
        let out = html("[ok](https://example.com/a:b) [rel](/x)");
        assert!(out.contains("href=\"https://example.com/a:b\""), "{out}");
        assert!(out.contains("href=\"/x\""), "{out}");
    }

    #[test]
    fn an_absent_options_field_uses_the_defaults() {
        let request: RenderRequest = sigil_actor::contracts::decode(
            &sigil_actor::contracts::encode(&Markdown { markdown: "x" }).unwrap(),
        )
        .unwrap();
        assert_eq!(request.options, RenderOptions::default());

        #[derive(Serialize)]
        struct Markdown<'a> {
            markdown: &'a str,
        }
    }
}
