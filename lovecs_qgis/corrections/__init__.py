"""Correcting a land-cover map by hand: the corrections vector layer (:mod:`.layer`), the
"Correct" map tool (:mod:`.map_tool`), the undo history shared by its layers (:mod:`.history`),
the class palette and panel (:mod:`.palette`, :mod:`.panel`) and the glue between them and the
engine's refine session (:mod:`.controller`)."""
