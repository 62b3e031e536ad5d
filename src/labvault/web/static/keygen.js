// A signer's Ed25519 key pair made in the browser (WebCrypto), as `labvault signer keygen` makes it
// on the signer's machine: the private key is saved as a file of 64 hexadecimal characters (the
// seed, the format `labvault` and sign.js read) and is never sent; the public key (64 hexadecimal
// characters) fills the form's field, to register.
"use strict";
(function () {
  function hex(bytes) {
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function generate(form) {
    const status = form.querySelector("[role=status]");
    try {
      const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
      const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
      const seed = pkcs8.slice(pkcs8.length - 32);  // PKCS#8 of Ed25519: a fixed prefix, then the seed
      const raw = await crypto.subtle.exportKey("raw", pair.publicKey);
      const url = URL.createObjectURL(new Blob([hex(seed) + "\n"], { type: "application/octet-stream" }));
      const link = document.createElement("a");
      link.href = url;
      link.download = "labvault-signer.key";
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
      form.querySelector("input[name=public_key]").value = hex(raw);
      status.textContent = form.dataset.generated;
    } catch (err) {
      status.textContent = form.dataset.unsupported;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("add-signer");
    if (!form || !window.crypto || !crypto.subtle) { return; }
    const button = form.querySelector("button[data-keygen]");
    button.hidden = false;
    button.addEventListener("click", function (ev) {
      ev.preventDefault();
      generate(form);
    });
  });
})();
