// Package extract turns an HTML document into link-preview metadata: title,
// description, site name, canonical URL, images, favicon, oEmbed discovery
// link and JSON-LD blocks.
//
// Extract is a pure function over bytes: it never fetches anything, never
// follows a meta refresh and never runs scripts. The document is decoded per
// WHATWG (BOM, then the Content-Type charset, then a <meta> prescan of the
// first 1024 bytes, then sniffing) and read with a streaming tokenizer, so
// memory stays bounded by the caller's size cap and the per-token limit; no
// DOM is built.
//
// Invariants of the returned Metadata: every URL is absolute and http or
// https (others are dropped); text fields are entity-decoded, trimmed,
// whitespace-collapsed and capped in length; Images holds at most
// Options.MaxImages entries and JSONLD at most Options.MaxJSONLD valid JSON
// blocks. Field precedence is og: > twitter: > standard HTML, then JSON-LD;
// see Extract for the chain per field.
//
// Everything in the package is safe for concurrent use.
package extract
