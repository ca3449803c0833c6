"""`dvd app`: a local web page (Gradio) in front of the one video engine, `dvd.jobs.outputs.predict_to_folder`.

`jobs` runs uploads through the engine (limits, progress, Cancel, temporary files) and imports no Gradio; `page`
lays out the page and its `/predict` API; `examples` makes the example clips. `dvd.commands.app` starts it.
"""
