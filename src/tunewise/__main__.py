from tunewise.cli import entry

entry()
