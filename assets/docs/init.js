// Renders this listener's /openapi.json. No validator badge (it would call an outside
// service), no external assets: the page works with no internet.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#docs",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
