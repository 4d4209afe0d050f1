// Signs the docs page's "Try it out" requests with AWS Signature Version 4 (service
// execute-api), as an SDK would for an IAM-authorized HTTP API. The Authorize dialog's value is
// ACCESS_KEY_ID:SECRET_ACCESS_KEY (or ACCESS_KEY_ID:SECRET:SESSION_TOKEN); it stays in the page,
// only the signature is sent. Uses the browser's WebCrypto (available on 127.0.0.1 and localhost).
(function () {
  "use strict";
  const encoder = new TextEncoder();

  const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  const sha256 = async (data) => hex(await crypto.subtle.digest("SHA-256", typeof data === "string" ? encoder.encode(data) : data));
  const hmac = async (key, data) => {
    const raw = typeof key === "string" ? encoder.encode(key) : key;
    const imported = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return crypto.subtle.sign("HMAC", imported, encoder.encode(data));
  };
  // RFC 3986 unreserved characters stay, everything else is percent-encoded (SigV4's rule).
  const uriEncode = (text) => encodeURIComponent(text).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

  function canonicalQuery(params) {
    const pairs = [];
    params.forEach((value, key) => pairs.push([uriEncode(key), uriEncode(value)]));
    pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    return pairs.map(([k, v]) => k + "=" + v).join("&");
  }

  async function sign(request, region) {
    const headers = request.headers || {};
    const name = Object.keys(headers).find((h) => h.toLowerCase() === "authorization");
    const given = name ? String(headers[name]) : "";
    // Not credentials (empty, or already a signature): send the request as it is.
    if (!given || given.startsWith("AWS4-HMAC-SHA256")) return request;
    const [accessKey, secretKey, token] = given.split(":");
    if (!accessKey || !secretKey) return request;
    delete headers[name];

    const url = new URL(request.url, window.location.href);
    const now = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
    const day = now.slice(0, 8);
    const body = request.body == null ? "" : request.body;
    const signed = { host: url.host, "x-amz-date": now };
    if (token) signed["x-amz-security-token"] = token;
    const contentType = Object.keys(headers).find((h) => h.toLowerCase() === "content-type");
    if (contentType) signed["content-type"] = String(headers[contentType]).trim();
    const names = Object.keys(signed).sort();
    const path = url.pathname.split("/").map((segment) => uriEncode(decodeURIComponent(segment))).join("/");
    const canonical = [
      request.method.toUpperCase(), path, canonicalQuery(url.searchParams),
      names.map((h) => h + ":" + signed[h] + "\n").join(""), names.join(";"),
      await sha256(typeof body === "string" ? body : await new Response(body).arrayBuffer()),
    ].join("\n");
    const scope = `${day}/${region}/execute-api/aws4_request`;
    const toSign = ["AWS4-HMAC-SHA256", now, scope, await sha256(canonical)].join("\n");
    let key = await hmac("AWS4" + secretKey, day);
    for (const part of [region, "execute-api", "aws4_request"]) key = await hmac(key, part);
    const signature = hex(await hmac(key, toSign));

    headers["X-Amz-Date"] = now;
    if (token) headers["X-Amz-Security-Token"] = token;
    headers["Authorization"] = `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, ` +
      `SignedHeaders=${names.join(";")}, Signature=${signature}`;
    request.headers = headers;
    return request;
  }

  window.previewSigV4 = { sign };
})();
