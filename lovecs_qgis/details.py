"""The "Details" window of a run: what went wrong, said once, then the log in plain words, with
the engine's raw output one click away. Not modal: QGIS stays usable while it is open."""

from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from .i18n import tr


class DetailsDialog(QDialog):
    """``message``: the error (or headline) shown once on top; ``log``: the log for people;
    ``raw``: the engine's output, shown instead of ``log`` on request."""

    def __init__(self, parent: Optional[QWidget], message: str, log: str, raw: str) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("LoveCS log"))
        self.resize(640, 420)
        self.log, self.raw = log, raw
        layout = QVBoxLayout(self)
        self.message_label = QLabel(message, self)
        self.message_label.setWordWrap(True)
        self.message_label.setVisible(bool(message))
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.raw_check = QCheckBox(tr("Show the engine's output"), self)
        self.raw_check.toggled.connect(self.show_raw)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.rejected.connect(self.close)
        for widget in (self.message_label, self.text, self.raw_check, buttons):
            layout.addWidget(widget)
        self.show_raw(False)

    def show_raw(self, raw: bool) -> None:
        self.text.setLineWrapMode(QPlainTextEdit.NoWrap if raw else QPlainTextEdit.WidgetWidth)
        self.text.setPlainText(self.raw if raw else self.log)

    def shown_text(self) -> str:
        """Everything the window shows now (tests read it)."""
        return "\n".join(filter(None, [self.message_label.text(), self.text.toPlainText()]))
