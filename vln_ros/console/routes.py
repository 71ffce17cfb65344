"""The console's HTTP side but the WebSocket: the guard every route passes, the page and its assets. No ROS.

With a token in force every route wants it (`?token=`, the session cookie, or `Authorization: Bearer`), else
401. The page loaded with `?token=` gets the token back as a cookie (HttpOnly: the page's scripts never see it;
SameSite=Strict: no other site's page can send it; no Max-Age: it ends with the browser session), and the page
then removes the token from its URL (console.js), so it stays in neither the address bar nor the history;
the assets, reloads and the WebSocket authenticate by the cookie. A token given in the URL must be right,
whatever cookie comes with it. Without one
(loopback address, no token set) only loopback host names are answered (a DNS-rebinding guard), and a
browser's WebSocket must come from the same origin (no other web site the operator visits can drive the
robot). The page's answer carries the newest keyframe (its first paint): behind the same guard, uncached.
Every answer carries SECURITY_HEADERS.
"""
from __future__ import annotations

import base64
import hmac
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

COOKIE_PREFIX = 'vln_console_'   # + the port the browser used: cookies ignore ports, so two consoles on one
                                 # host (a fleet) keep a cookie each instead of overwriting one

STATIC_DIR = Path(__file__).resolve().parent / 'static'
CONTENT_TYPES = {'.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml',
                 '.png': 'image/png', '.ico': 'image/x-icon'}
SECURITY_HEADERS = {
    'Content-Security-Policy': "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; "
                               "script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'X-Frame-Options': 'DENY',
    'Cache-Control': 'no-store',
}


def is_loopback(host: str) -> bool:
    """A loopback address or name ('127.0.0.1', '::1', 'localhost')."""
    host = host.strip().strip('[]').lower()
    if host == 'localhost' or host.endswith('.localhost'):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_origin(request: web.Request) -> bool:
    """No Origin header (not a browser) or the page's own origin."""
    origin = request.headers.get('Origin')
    if origin is None:
        return True
    try:
        theirs, ours = URL(origin), URL('http://' + request.host)
    except ValueError:
        return False
    return (theirs.host is not None and theirs.host.lower() == (ours.host or '').lower()
            and theirs.explicit_port == ours.explicit_port)


def cookie_name(request: web.Request) -> str:
    """The session cookie's name for the port the browser asked for (a tunnel's or a proxy's port included)."""
    return f'{COOKIE_PREFIX}{request.url.port or 0}'


NewestImage = Callable[[], 'tuple[float, bytes] | None']   # (stamp_s, JPEG) of the newest keyframe, or None
FIRST_IMAGE_TIMING = 'first-keyframe'   # the page image's Element Timing name: console.js reads when it came


class Routes:
    """The guard (an aiohttp middleware) and the handlers of GET / and GET /static/<file> (loop thread only).
    counts: the server's counters; the guard adds its refusals to them. newest_image: the page's first image."""

    def __init__(self, token: str, counts: dict[str, int], newest_image: NewestImage = lambda: None) -> None:
        self._token = token
        self._counts = counts
        self._newest_image = newest_image
        self._assets: dict[str, tuple[bytes, str]] = {}
        self._index = ('', '')   # the page before and after its first image's attributes

    def load(self) -> None:
        for path in STATIC_DIR.iterdir():
            if path.is_file() and path.suffix in CONTENT_TYPES:
                self._assets[path.name] = (path.read_bytes(), CONTENT_TYPES[path.suffix])
        # the assets authenticate by the cookie the page's own answer sets: no token in their URLs
        before, after = (STATIC_DIR / 'index.html').read_text(encoding='utf-8').replace('{{QUERY}}', '').split(
            '{{FIRST_IMAGE}}')
        self._index = (before, after)

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        in_url = False
        if self._token:
            given, in_url = self._given_token(request)
            if not hmac.compare_digest(given.encode('utf-8', 'replace'), self._token.encode('utf-8', 'replace')):
                self._counts['refused_token'] += 1
                return web.Response(status=401, text='401: missing or wrong token (open the URL the console '
                                    'printed at start)\n', headers={'WWW-Authenticate': 'Bearer'})
        elif not is_loopback(request.url.host or ''):
            self._counts['refused_host'] += 1
            return web.Response(status=403, text='403: without a token this console answers loopback host '
                                'names only (127.0.0.1, localhost)\n')
        if request.path == '/ws' and not same_origin(request):
            self._counts['refused_origin'] += 1
            return web.Response(status=403, text='403: WebSocket from another origin\n')
        response: web.StreamResponse = await handler(request)
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
            if in_url and request.path == '/':
                # a session cookie (no Max-Age, no Expires); not Secure: the console is plain HTTP
                response.set_cookie(cookie_name(request), self._token, path='/', httponly=True, samesite='Strict')
        return response

    @staticmethod
    def _given_token(request: web.Request) -> tuple[str, bool]:
        """The token the request carries, and whether it came in the URL. A token in the URL is the one
        checked when there is one (a wrong one is refused even beside a good cookie); then the cookie, then
        an Authorization: Bearer header (scripts)."""
        if 'token' in request.query:
            return request.query['token'], True
        cookie = request.cookies.get(cookie_name(request))
        if cookie is not None:
            return cookie, False
        auth = request.headers.get('Authorization', '')
        return (auth[7:].strip() if auth[:7].lower() == 'bearer ' else ''), False

    async def serve_index(self, request: web.Request) -> web.Response:
        """The page, with the newest keyframe in it (a data: URL, its stamp in data-stamp): shown as the page is
        parsed, before its script, its socket and the next keyframe (console_first_image_s; a request of its
        own for the image waited 0.1-0.3 s for this server under load). About 4/3 of a keyframe's bytes more."""
        image = self._newest_image()
        first = ''
        if image is not None:
            stamp_s, jpeg = image
            first = (f' src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode("ascii")}" '
                     f'data-stamp="{stamp_s!r}" data-source="page" elementtiming="{FIRST_IMAGE_TIMING}"')
        return web.Response(text=first.join(self._index), content_type='text/html', charset='utf-8')

    async def serve_static(self, request: web.Request) -> web.Response:
        asset = self._assets.get(request.match_info['name'])
        if asset is None:
            raise web.HTTPNotFound(text='404: no such file\n')
        body, content_type = asset
        return web.Response(body=body, content_type=content_type,
                            charset='utf-8' if content_type.startswith('text/') else None)
