import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen("http://127.0.0.1:8888/api", timeout=4)
except urllib.error.HTTPError as e:
    sys.exit(e.code >= 500)
except OSError:
    sys.exit(1)
