//! HTTP_PROXY request and response (cmd 12, spec §3.11, §3.12, §12).

use super::{FieldReader, FieldWriter, Message, ProtocolError, WireField};

/// Encodes headers as MPush does: `name:value\n` per entry; none → null string.
pub fn encode_headers(headers: &[(String, String)]) -> Option<String> {
    if headers.is_empty() {
        return None;
    }
    let mut s = String::new();
    for (k, v) in headers {
        s.push_str(k);
        s.push(':');
        s.push_str(v);
        s.push('\n');
    }
    Some(s)
}

/// Decodes a header string: lines split at the first `:`; lines without a name are skipped.
/// An empty value is "" (the original carried the previous value over, quirk Q18 fixed).
pub fn decode_headers(s: Option<&str>) -> Vec<(String, String)> {
    let Some(s) = s else {
        return Vec::new();
    };
    s.split('\n')
        .filter_map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (!name.is_empty()).then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// Headers travel as one string, [`encode_headers`] / [`decode_headers`].
impl WireField for Vec<(String, String)> {
    fn put(&self, w: &mut FieldWriter) {
        w.put_string(encode_headers(self).as_deref());
    }

    fn get(r: &mut FieldReader<'_>, field: &'static str) -> Result<Self, ProtocolError> {
        Ok(decode_headers(r.get_string(field)?.as_deref()))
    }
}

/// "HttpRequestMessage".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// 0 GET, 1 POST, 2 PUT, 3 DELETE; anything else is GET.
    pub method: i8,
    /// Absolute URL.
    pub uri: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
}

wire_fields!(HttpRequest {
    method: "method",
    uri: "uri",
    headers: "headers",
    body: "body"
});

/// "HttpResponseMessage".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// HTTP status.
    pub status_code: i32,
    /// Reason phrase.
    pub reason_phrase: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
}

wire_fields!(HttpResponse {
    status_code: "statusCode",
    reason_phrase: "reasonPhrase",
    headers: "headers",
    body: "body"
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing_keeps_empty_values_and_skips_nameless_lines() {
        let h = decode_headers(Some("a:1\nb:\n:x\nc:d:e\n\nnocolon"));
        let want = [("a", "1"), ("b", ""), ("c", "d:e"), ("nocolon", "")];
        assert_eq!(h.len(), want.len());
        for ((k, v), (wk, wv)) in h.iter().zip(want) {
            assert_eq!((k.as_str(), v.as_str()), (wk, wv));
        }
        assert_eq!(encode_headers(&[]), None);
    }
}
