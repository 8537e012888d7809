"""ACME certificates on the web: the http-01 answers CAs fetch, and the downloads.

- ``GET /.well-known/acme-challenge/<token>``: no login, the key authorization as plain
  text while the order that made the token is pending, 404 for any other token. The
  provider routes this path from its web servers to Provisor (README, "acme").
- ``GET /my/services/<id>/certificate/<part>.pem``: the client of the service downloads
  its current certificate (``fullchain``, ``certificate``, ``chain``) and the private key
  (``key``); any other service is "not found".
- ``GET /services/<id>/certificate/<part>.pem``: staff download the certificate and the
  chain; not the private key, which stays the client's.

The service pages list what there is to download through the ``certificate_downloads``
template function.
"""

from flask import Blueprint, Response, abort, url_for
from flask_login import current_user

from app.auth import client_required, staff_required
from app.services import certificates, provisioning
from app.services.errors import NotFound

bp = Blueprint("certificates", __name__)


@bp.get("/.well-known/acme-challenge/<token>")
def challenge(token):
    """An ACME CA checks an http-01 challenge: the key authorization, or 404."""
    answer = certificates.key_authorization(token)
    if answer is None:
        return Response("Not found: no such token\n", status=404, mimetype="text/plain")
    return Response(answer, mimetype="text/plain")


def _pem(service, part, for_client):
    if part not in certificates.PARTS:
        abort(404)
    try:
        filename, text = certificates.download(service, part, for_client)
    except NotFound:
        abort(404)
    response = Response(text, mimetype="application/x-pem-file")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/my/services/<int:service_id>/certificate/<part>.pem")
@client_required
def my_download(service_id, part):
    """My certificate, its chain or its private key, as PEM."""
    service = provisioning.get_for_client(service_id, current_user.client_id)
    return _pem(service, part, for_client=True)


@bp.get("/services/<int:service_id>/certificate/<part>.pem")
@staff_required
def staff_download(service_id, part):
    """A service's certificate or chain as PEM (never the private key)."""
    return _pem(provisioning.get(service_id), part, for_client=False)


@bp.app_template_global()
def certificate_downloads(service, for_client=False):
    """``[(part, label, url)]`` of the service's certificate (empty when it has none)."""
    endpoint = "certificates.my_download" if for_client else "certificates.staff_download"
    return [
        (part, label, url_for(endpoint, service_id=service.id, part=part))
        for part, label in certificates.downloads(service, for_client)
    ]
