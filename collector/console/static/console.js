// ccbridge console: the only script, loaded from /static (the Content-Security-Policy forbids inline script).
// It submits the approval-trail filter form when a drop-down changes; everything else works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("filters");
  if (!form) { return; }
  form.querySelectorAll("select").forEach(function (el) {
    el.addEventListener("change", function () { form.submit(); });
  });
});
