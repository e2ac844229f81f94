"""``lovecs:trainsource``: train a land-cover model on labelled rasters (``lovecs train``)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from ..engine import contract
from ..i18n import tr
from ..runner import engine_args
from .base import (
    DEVICES,
    EngineAlgorithm,
    choice_parameter,
    class_field_parameter,
    output_path,
    raster_path,
    vector_source,
)

PRESETS = list(contract.TRAIN_PRESET_NAMES)
ARCHITECTURES = list(contract.ARCHITECTURES)


class TrainSourceAlgorithm(EngineAlgorithm):
    COMMAND = "train"
    IMAGES, LABELS, IMAGE_FOLDER, LABEL_FOLDER = "IMAGES", "LABELS", "IMAGE_FOLDER", "LABEL_FOLDER"
    CLASSES, PRESET, BANDS, DEVICE, NAME = "CLASSES", "PRESET", "BANDS", "DEVICE", "NAME"
    VECTOR_LABELS, CLASS_FIELD = "VECTOR_LABELS", "CLASS_FIELD"
    ARCH, ENCODER, ITERATIONS, BATCH_SIZE, CROP, SEED = (
        "ARCH",
        "ENCODER",
        "ITERATIONS",
        "BATCH_SIZE",
        "CROP",
        "SEED",
    )
    OUTPUT, FINAL_LOSS = "OUTPUT", "FINAL_LOSS"

    def name(self) -> str:
        return "trainsource"

    def displayName(self) -> str:
        return tr("Train a land-cover model on labelled rasters")

    def shortHelpString(self) -> str:
        return tr(
            "Trains a Semantic FPN land-cover model (with cross-sensor normalisation layers, "
            "ready for adaptation) on image rasters and label rasters of class codes "
            "(0 = no label), paired by file name. Images and labels can be layers, files or "
            "whole folders. Instead of label rasters, a vector layer of labels (ROI polygons, "
            "lines or points in any CRS, as SCP and dzetsaka keep them) with an integer class "
            "field can be given: it is burnt onto every image it covers."
            "<br><br><b>Classes</b>: a JSON file "
            '<code>{"classes": [{"code": 1, "name": "building", "color": '
            '"#E6194B"}, ...]}</code>.<br><b>Preset</b>: <i>fast</i> (ResNet-18, CPU-'
            "friendly), <i>standard</i> (ResNet-34), <i>paper</i> (ResNet-50, 10000 "
            "iterations: a GPU job). Advanced settings override the preset."
        )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.IMAGES, tr("Image rasters"), QgsProcessing.TypeRaster, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.LABELS,
                tr("Label rasters (class codes, 0 = no label)"),
                QgsProcessing.TypeRaster,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.VECTOR_LABELS,
                tr("Or labels as a vector layer (ROI polygons, lines or points)"),
                [QgsProcessing.TypeVectorAnyGeometry],
                optional=True,
            )
        )
        self.addParameter(
            class_field_parameter(
                self.CLASS_FIELD,
                self.VECTOR_LABELS,
                tr("Class field of the vector labels (integer class codes)"),
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.IMAGE_FOLDER,
                tr("Folder of image rasters"),
                QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.LABEL_FOLDER,
                tr("Folder of label rasters"),
                QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.CLASSES,
                tr("Classes (JSON: code, name, color)"),
                QgsProcessingParameterFile.File,
                fileFilter="JSON (*.json)",
            )
        )
        self.addParameter(choice_parameter(self.PRESET, tr("Preset"), PRESETS))
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS, tr("Bands (e.g. 3,2,1; empty: all but alpha)"), optional=True
            )
        )
        self.addParameter(choice_parameter(self.DEVICE, tr("Device"), DEVICES))
        self.addParameter(
            QgsProcessingParameterString(
                self.NAME, tr("Model name"), defaultValue="LoveCS land-cover model"
            )
        )
        integer = QgsProcessingParameterNumber.Integer
        advanced = [
            choice_parameter(self.ARCH, tr("Architecture (tiny: tests and demos)"), ARCHITECTURES),
            QgsProcessingParameterString(
                self.ENCODER,
                tr("Encoder (e.g. resnet50, mobilenet_v2; empty: the preset's)"),
                optional=True,
            ),
            QgsProcessingParameterNumber(
                self.ITERATIONS,
                tr("Iterations (0: the preset's)"),
                integer,
                defaultValue=0,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE,
                tr("Batch size (0: the preset's)"),
                integer,
                defaultValue=0,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.CROP,
                tr("Training window in pixels (0: the preset's)"),
                integer,
                defaultValue=0,
                minValue=0,
            ),
            QgsProcessingParameterNumber(self.SEED, tr("Random seed"), integer, defaultValue=0),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, tr("Model file"), "LoveCS model (*.lovecs)"
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.FINAL_LOSS, tr("Final training loss")))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        images = [
            raster_path(lyr, "image")
            for lyr in self.parameterAsLayerList(parameters, self.IMAGES, context)
        ]
        labels = [
            raster_path(lyr, "label")
            for lyr in self.parameterAsLayerList(parameters, self.LABELS, context)
        ]
        image_folder = self.parameterAsFile(parameters, self.IMAGE_FOLDER, context)
        label_folder = self.parameterAsFile(parameters, self.LABEL_FOLDER, context)
        images += [image_folder] if image_folder else []
        labels += [label_folder] if label_folder else []
        vector = self.parameterAsVectorLayer(parameters, self.VECTOR_LABELS, context)
        if not images or bool(labels) == bool(vector):
            raise QgsProcessingException(
                tr(
                    "give image rasters (layers or a folder) and either their label rasters "
                    "or a vector layer of labels"
                )
            )
        points, layer = vector_source(vector, context, "labels") if vector else (None, None)
        out = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        args = engine_args(
            images=images,
            labels=labels or None,
            points=points,
            layer=layer,
            class_field=self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
            classes=self.parameterAsFile(parameters, self.CLASSES, context),
            out=out,
            preset=self.choice(parameters, self.PRESET, context),
            arch=self.choice(parameters, self.ARCH, context),
            encoder=self.parameterAsString(parameters, self.ENCODER, context).strip() or None,
            iterations=self.parameterAsInt(parameters, self.ITERATIONS, context) or None,
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context) or None,
            crop=self.parameterAsInt(parameters, self.CROP, context) or None,
            bands=self.parameterAsString(parameters, self.BANDS, context).strip() or None,
            name=self.parameterAsString(parameters, self.NAME, context).strip() or None,
            device=self.choice(parameters, self.DEVICE, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
        )
        result = self.run_engine(args, feedback, outputs=[out])
        return {self.OUTPUT: out, self.FINAL_LOSS: result.get("final_loss")}
