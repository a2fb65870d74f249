// Refresh the status page without a reload: fetch it again and swap its <main>.
// One renderer (the server's); a failed fetch leaves the page as it was and says so.
(function () {
  "use strict";
  var script = document.currentScript;
  var seconds = Number((script && script.dataset.refresh) || 5);

  function refresh() {
    fetch(window.location.pathname, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (fresh && main) {
          // Keep which attempt lists were open across the swap.
          var open = {};
          main.querySelectorAll("details[open]").forEach(function (d) {
            open[d.dataset.attempts] = true;
          });
          fresh.querySelectorAll("details").forEach(function (d) {
            if (open[d.dataset.attempts]) { d.open = true; }
          });
          main.replaceWith(fresh);
        }
        document.body.classList.remove("stale");
      })
      .catch(function () { document.body.classList.add("stale"); })
      .finally(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
})();
