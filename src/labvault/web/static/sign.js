// A lab signer signs a migration's approval record in the browser (WebCrypto Ed25519). The private
// key file (64 hexadecimal characters, as `labvault signer keygen` writes it) is read here and never
// sent: its file input has no name, so the form does not carry it. Only the public key and the
// signature are posted.
"use strict";
(function () {
  const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

  function hexToBytes(hex) {
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) { throw new Error("not a signer's key (64 hexadecimal characters)"); }
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) { out[i] = parseInt(hex.substr(i * 2, 2), 16); }
    return out;
  }
  function b64ToBytes(b64) { return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)); }
  function bytesToB64(bytes) { return btoa(String.fromCharCode.apply(null, new Uint8Array(bytes))); }
  function b64urlToHex(s) {
    const b = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    return Array.from(b, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
  }

  async function sign(form) {
    const file = form.querySelector("input[type=file]").files[0];
    const status = form.querySelector("[role=status]");
    if (!file) { status.textContent = form.dataset.needKey; return; }
    try {
      const seed = hexToBytes((await file.text()).trim());
      const der = new Uint8Array(PKCS8_PREFIX.length + 32);
      der.set(PKCS8_PREFIX); der.set(seed, PKCS8_PREFIX.length);
      const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
      const jwk = await crypto.subtle.exportKey("jwk", key);
      const signature = await crypto.subtle.sign({ name: "Ed25519" }, key, b64ToBytes(form.dataset.record));
      form.querySelector("input[name=public_key]").value = b64urlToHex(jwk.x);
      form.querySelector("input[name=signature]").value = bytesToB64(signature);
      form.submit();
    } catch (err) {
      status.textContent = form.dataset.failed;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-record]").forEach(function (form) {
      form.querySelector("button[data-sign]").addEventListener("click", function (ev) {
        ev.preventDefault();
        sign(form);
      });
    });
  });
})();
