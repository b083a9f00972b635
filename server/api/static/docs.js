// Starts Swagger UI on the API documentation page (/api/docs). A file, not an inline script,
// so the page's Content-Security-Policy can forbid inline scripts.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null, // the default sends the document to a validator on the internet
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
});
