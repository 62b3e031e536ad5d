// The enrolment link is /enrol#token=...: the fragment never leaves the browser (no server log,
// proxy or Referer sees it). Copy the token into the form's field, then clear it from the address
// bar and the browser history.
"use strict";
(function () {
  document.addEventListener("DOMContentLoaded", function () {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (!token) { return; }
    const field = document.querySelector("form[action='/enrol'] input[name=token]");
    if (field && !field.value) { field.value = token; }
    history.replaceState(null, "", window.location.pathname + window.location.search);
  });
})();
