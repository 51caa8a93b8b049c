"""HTTP surfaces, each a small module of Starlette routes wired together by the app factory.

``download`` serves the links in export emails and ``LogExport.downloadUrl`` (README.md,
"Download links").
"""
